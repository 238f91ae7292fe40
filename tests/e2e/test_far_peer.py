"""A real far-away peer: namespaces joined by the TUN delay line (tests/fixtures/delayline.py).

These tests need root and /dev/net/tun (the ``lab`` fixture skips with the reason otherwise).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import delayline
import pytest
from delayline import Lab, lab  # noqa: F401  (the fixture is used by name)

pytestmark = [pytest.mark.slow, pytest.mark.root]

_LISTEN = "import socket,time;s=socket.create_server(('0.0.0.0',{port}));time.sleep(600)"
_CONNECT_TIMES = (
    "import socket,time\n"
    "for _ in range({n}):\n"
    "    t=time.monotonic();c=socket.create_connection(('{ip}',{port}),timeout=5)\n"
    "    print((time.monotonic()-t)*1000);c.close()\n"
)


def _wait_listening(lab: Lab, namespace: str, port: int) -> None:
    probe = f"import socket;socket.create_connection(('127.0.0.1',{port}),timeout=1).close()"
    for _ in range(50):
        if lab.run(namespace, [sys.executable, "-c", probe]).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} in {namespace}")


@pytest.mark.parametrize("rtt_ms", [20.0, 180.0])
def test_delay_line_gives_the_configured_round_trip(lab: Lab, rtt_ms: float) -> None:
    link = lab.far_peer(rtt_ms)
    lab.spawn(link.far_ns, [sys.executable, "-c", _LISTEN.format(port=7000)])
    _wait_listening(lab, link.far_ns, 7000)
    done = lab.run(lab.near, [sys.executable, "-c", _CONNECT_TIMES.format(n=7, ip=link.far_ip, port=7000)])
    assert done.returncode == 0, done.stderr
    samples = [float(line) for line in done.stdout.split()]
    # A TCP connect is one round trip (SYN out, SYN-ACK back); the line can only add delay.
    assert min(samples) >= rtt_ms
    assert statistics.median(samples) <= rtt_ms * 1.10
    print(f"delay line {rtt_ms} ms: connect min {min(samples):.2f} median {statistics.median(samples):.2f} ms")


_FAILING_TEST = """
import sys
from delayline import lab

def test_fails_midway(lab):
    link = lab.far_peer(50)
    child = lab.spawn(link.far_ns, [sys.executable, "-c", "import time; time.sleep(600)"])
    with open({record!r}, "w") as out:
        out.write(f"{{lab.near}} {{link.far_ns}} {{link.process.pid}} {{child.pid}}")
    raise AssertionError("this test fails on purpose")
"""


@pytest.mark.skipif(delayline.unavailable_reason() is not None, reason=str(delayline.unavailable_reason()))
def test_lab_cleans_up_after_a_failing_test(tmp_path: Path) -> None:
    record = tmp_path / "made.txt"
    test_file = tmp_path / "test_inner_failure.py"
    test_file.write_text(_FAILING_TEST.format(record=str(record)))
    fixtures = str(Path(delayline.__file__).parent)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": fixtures}, timeout=120,
    )
    assert done.returncode == 1 and "this test fails on purpose" in done.stdout, done.stdout + done.stderr
    near, far, line_pid, child_pid = record.read_text().split()
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert near not in namespaces and far not in namespaces
    for pid in (line_pid, child_pid):
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived its test"


AGENT = str(Path(sys.executable).parent / "farmwatch-agent")
FAR_RTT_MS = 180.0
OPERATOR_SIDE = """
import socket, time
server = socket.create_server(("0.0.0.0", 7070))
print("ready", flush=True)
held = []
while True:
    conn, _ = server.accept()
    conn.sendall(b"welcome")
    held.append(conn)
"""
ANYDESK = """
import socket, sys
relay = socket.create_connection(("{ip}", 7070), timeout=10)
relay.recv(7)
relay.sendall(b"frames")
print("ready", flush=True)
sys.stdin.read()
"""
SSHD_LIKE = """
import socket
server = socket.create_server(("0.0.0.0", 22))
print("ready", flush=True)
held = []
while True:
    conn, _ = server.accept()
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\\r\\n")
    held.append(conn)
"""
SSH_CLIENT = """
import socket, sys
c = socket.create_connection(("{ip}", 22), timeout=10)
c.recv(64)
c.sendall(b"SSH-2.0-operator\\r\\n")
print("ready", flush=True)
sys.stdin.read()
"""


def _ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"


def _within_10_percent(measured: float | None, configured: float) -> bool:
    return measured is not None and abs(measured - configured) <= configured * 0.10


def test_agent_shows_the_far_operator_of_anydesk_and_ssh(lab: Lab) -> None:  # noqa: F811
    """The issue's "done when": a far AnyDesk peer and an inbound SSH session, 180 ms away."""
    link = lab.far_peer(FAR_RTT_MS)
    _ready(lab.spawn(link.far_ns, [sys.executable, "-c", OPERATOR_SIDE], stdout=subprocess.PIPE))
    anydesk = lab.spawn_named(lab.near, "AnyDesk", ANYDESK.format(ip=link.far_ip),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    _ready(anydesk)
    _ready(lab.spawn_named(lab.near, "sshd", SSHD_LIKE, stdout=subprocess.PIPE))
    _ready(lab.spawn(link.far_ns, [sys.executable, "-c", SSH_CLIENT.format(ip=link.near_ip)],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    done = lab.run(lab.near, [AGENT, "once", "--print", "--window", "0.5"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    tools = [t for t in report["remote_access"] if t["pid"] == anydesk.pid]
    assert [t["tool"] for t in tools] == ["anydesk"]
    (relay,) = [c for c in tools[0]["connections"] if c["remote_ip"] == link.far_ip]
    assert (relay["remote_port"], relay["direction"]) == (7070, "outbound")
    assert _within_10_percent(relay["min_rtt_ms"], FAR_RTT_MS), relay

    (session,) = [s for s in report["sessions"] if s["remote_ip"] == link.far_ip]
    assert session["kind"] == "ssh"
    assert _within_10_percent(session["min_rtt_ms"], FAR_RTT_MS), session
    print(f"AnyDesk min_rtt {relay['min_rtt_ms']} ms, ssh min_rtt {session['min_rtt_ms']} ms "
          f"(configured {FAR_RTT_MS} ms)")
