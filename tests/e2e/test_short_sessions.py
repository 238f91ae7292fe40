"""Issue 16's "done when": a remote session that starts and ends inside one reporting window is in
that window's report with its kernel RTT.

A real ``farmwatch-agent once`` in a network namespace reports to a real collector; during its
window a process named AnyDesk dials an operator 180 ms away through the TUN delay line
(tests/fixtures/delayline.py) and an SSH session comes in from that far namespace to a server
named sshd; both end seconds later, well before the window does. The stored report, read back with
``farmwatch-collector export``, must hold both, marked CLOSED, with first/last seen inside the
window and the kernel's minimum RTT within 10 % of the line's (needs root and /dev/net/tun; the
``lab`` fixture skips otherwise).
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from delayline import Lab, lab  # noqa: F401  (the fixture is used by name)
from test_far_peer import AGENT, COLLECTOR_CONFIG, FAR_RTT_MS, _collector_in, _within_10_percent

pytestmark = [pytest.mark.slow, pytest.mark.root]

WINDOW_SECONDS = 14
SESSION_SECONDS = 4
WATCHING = COLLECTOR_CONFIG + """
[agent.probe_options.remote_access]
watch_period_seconds = 0.5
[agent.probe_options.sessions]
watch_period_seconds = 0.5
"""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_a_session_inside_one_window_is_in_its_report_with_the_kernel_rtt(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    link = lab.far_peer(FAR_RTT_MS)
    lab.server(link.far_ns, 7070, greeting=b"relay")  # the operator's end
    lab.server(lab.near, 22, name="sshd", greeting=b"SSH-2.0-OpenSSH_9.6\r\n")
    collector = _collector_in(lab, tmp_path / "collector", WATCHING)
    state = tmp_path / "state"
    agent = lab.spawn(lab.near, [AGENT, "once", "--collector", collector.url, "--enroll-secret-file",
                                 str(collector.enroll_secret_file), "--state-dir", str(state),
                                 "--window", str(WINDOW_SECONDS)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(state / "config.json", agent)  # enrolled and configured: the window starts now
    time.sleep(1.5)

    anydesk = lab.client(lab.near, link.far_ip, [7070], name="AnyDesk")
    ssh = lab.client(link.far_ns, link.near_ip, [22])  # the operator logs in over SSH
    time.sleep(SESSION_SECONDS)
    for session in (anydesk, ssh):  # the client ends, and its connection with it
        session.terminate()
        session.wait(timeout=10)
    assert agent.poll() is None, "the window ended before the sessions did; the test proves nothing"

    _, errors = agent.communicate(timeout=120)
    assert agent.returncode == 0, errors + collector.log()
    exported = collector.cli("export", "--db", collector.db_url)
    assert exported.returncode == 0, exported.stderr
    (record,) = [json.loads(line) for line in exported.stdout.splitlines() if line.strip()]
    report = record["report"]
    start, end = _time(report["window_start"]), _time(report["window_end"])

    tools = [t for t in report.get("remote_access") or [] if t["pid"] == anydesk.pid]
    assert [(t["tool"], t["process"], t["matched_by"]) for t in tools] == [("anydesk", "AnyDesk", ["name"])], report
    (relay,) = [c for c in tools[0]["connections"] if c["remote_ip"] == link.far_ip]
    (session,) = [s for s in report.get("sessions") or [] if s["remote_ip"] == link.far_ip]
    assert (relay["remote_port"], relay["direction"], relay["state"]) == (7070, "outbound", "CLOSED")
    assert (session["kind"], session["state"]) == ("ssh", "CLOSED")
    for seen in (relay, session):
        assert _within_10_percent(seen["min_rtt_ms"], FAR_RTT_MS), seen
        first, last = _time(seen["first_seen"]), _time(seen["last_seen"])
        assert start < first <= last < end, (report["window_start"], seen, report["window_end"])
        # Held SESSION_SECONDS, polled every 0.5 s: seen for all of it but the polls at either end
        # (less if this busy box started the agent's watcher late; never longer than it lasted).
        assert 1.0 <= seen["duration_seconds"] <= SESSION_SECONDS + 1.0, seen
        assert seen["duration_seconds"] == pytest.approx((last - first).total_seconds(), abs=0.01)
    assert not [e for e in report["errors"] if e["probe"] in ("remote_access", "sessions")], report["errors"]
    print(f"AnyDesk closed after {relay['duration_seconds']} s, min_rtt {relay['min_rtt_ms']} ms; "
          f"ssh closed after {session['duration_seconds']} s, min_rtt {session['min_rtt_ms']} ms "
          f"(configured {FAR_RTT_MS} ms)")
