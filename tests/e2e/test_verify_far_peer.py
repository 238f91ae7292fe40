"""`farmwatch-agent verify` end to end: a real collector and a real agent in a network namespace,
while a process named AnyDesk holds a session to a peer 180 ms away (the TUN delay line,
tests/fixtures/delayline.py). The person running it sees a progress bar, is told AnyDesk and its
round trip, and the exit code is the collector's verdict (needs root and /dev/net/tun; the ``lab`` fixture skips otherwise)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from delayline import Lab, lab  # noqa: F401  (the fixture is used by name)
from test_far_peer import AGENT, FAR_RTT_MS, _collector_in

pytestmark = [pytest.mark.slow, pytest.mark.root]
EXIT_OF = {"clear": 0, "review": 2, "farm": 1}


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
    verdict = re.search(r"^verdict: (clear|review|farm) ", done.stdout, re.MULTILINE)
    assert verdict and done.returncode == EXIT_OF[verdict.group(1)], done.stdout + done.stderr
    # The verdict is the detectors' call on one short window (today: clear, since the detectors want
    # a session seen in several reports); the person is told what the laptop showed either way.
    assert re.search(r"^Result: .+\nWhat to do next: .+", done.stdout, re.MULTILINE)
    assert "  observed  [" in done.stdout
