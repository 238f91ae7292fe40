"""`farmwatch-agent verify` end to end: a real collector and a real agent in a network namespace,
while a process named AnyDesk holds a session to a peer 180 ms away (the TUN delay line,
tests/fixtures/delayline.py). The person running it sees a progress bar, is told AnyDesk and its
round trip, and the collector calls it a farm from this one window: AnyDesk dialled a peer that is
none of its catalogued relays, 180 ms away, farther than anyone near the laptop could be
(session_distance), so the exit code is 1 (needs root and /dev/net/tun; the ``lab`` fixture skips
otherwise)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from delayline import Lab, lab  # noqa: F401  (the fixture is used by name)
from test_far_peer import AGENT, FAR_RTT_MS, _collector_in

pytestmark = [pytest.mark.slow, pytest.mark.root]
ANALYST_VIEW = "import httpx; print(httpx.get({url!r}, headers={{'Authorization': 'Bearer {token}'}}, timeout=30).text)"


def test_verify_names_anydesk_and_its_round_trip(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    link = lab.far_peer(FAR_RTT_MS)
    lab.server(link.far_ns, 7070, greeting=b"relay")  # the operator's end
    lab.client(lab.near, link.far_ip, [7070], name="AnyDesk")
    collector = _collector_in(lab, tmp_path / "collector")

    done = lab.run(lab.near, [AGENT, "verify", "--collector", collector.url, "--enroll-secret-file",
                              str(collector.enroll_secret_file), "--state-dir", str(tmp_path / "state"),
                              "--seconds", "3"])
    print(done.stdout)
    assert "Traceback" not in done.stderr, done.stderr
    found = re.search(r"remote-access tool AnyDesk \(anydesk\) is running, connected: outbound "
                      + re.escape(link.far_ip) + r":7070 \(round trip (\d+) ms\)", done.stdout)
    assert found, done.stdout + done.stderr
    assert abs(int(found.group(1)) - FAR_RTT_MS) <= FAR_RTT_MS * 0.10
    assert re.search(r"^verdict: farm ", done.stdout, re.MULTILINE), done.stdout + done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^Result: .+\nWhat to do next: .+", done.stdout, re.MULTILINE)
    # For the right reason: the analyst's view of the verdict (the device token's answer withholds
    # findings) holds session_distance on the far direct peer.
    device = re.search(r"^verdict: farm \(risk [\d.]+\) for device (\S+)$", done.stdout, re.MULTILINE)
    assert device, done.stdout
    shown = lab.run(lab.near, [sys.executable, "-c", ANALYST_VIEW.format(
        url=f"{collector.url}/api/v1/devices/{device.group(1)}", token=collector.analyst_token)])
    assert shown.returncode == 0, shown.stderr
    findings = {f["detector"]: f for f in json.loads(shown.stdout)["findings"]}
    distance = findings["session_distance"]
    assert distance["evidence"]["peer"] == link.far_ip and distance["evidence"]["direction"] == "outbound"
    assert distance["evidence"]["session_reports"] == 1 and distance["score"] >= 0.8
    assert "  observed  [" in done.stdout
