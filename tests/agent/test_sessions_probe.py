"""The sessions probe against real server processes in a network namespace of our own.

The "servers" are copies of this interpreter renamed ``sshd`` / ``x11vnc`` (their process name is
what the probe reads); the "operator" connects from a far namespace through the TUN delay line,
so each session has a real kernel RTT. WTS_CLIENT_ADDRESS bytes below are written by hand from
the documented structure (no Windows here); the WTS API path is in test_wts_sessions.py.
"""

from __future__ import annotations

import json
import pwd
import subprocess
import sys
from typing import Any

import pytest
from delayline import Lab, lab  # noqa: F401  (fixture)

from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.sessions.probe import SessionsProbe
from farmwatch.agent.probes.sessions.wts import parse_client_address, session_kind

RTT_MS = 40.0
NOBODY = 65534

# Like OpenSSH privilege separation: the listener forks, and the session child runs as the user.
SSHD_LIKE = """
import os, socket
server = socket.create_server(("0.0.0.0", 22))
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    if os.fork() == 0:
        server.close()
        os.setgid(65534); os.setuid(65534)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\\r\\n")
        while conn.recv(1024):
            pass
        os._exit(0)
"""
COLLECT = """
import json, os, sys
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.sessions.probe import SessionsProbe
probe = SessionsProbe(ProbeContext())
if sys.argv[1:] == ["unprivileged"]:
    os.setgid(65534); os.setuid(65534)
found = probe.collect()
print(json.dumps({"sessions": [s.model_dump(mode="json") for s in found], "problems": probe.problems}))
"""


def _farm(lab: Lab) -> str:
    """sshd-like on 22, x11vnc-like on 5901, an unrelated server on 8080, all with a far client.

    Returns the far client's address."""
    link = lab.far_peer(RTT_MS)
    sshd = lab.spawn_named(lab.near, "sshd", SSHD_LIKE, stdout=subprocess.PIPE)
    assert sshd.stdout is not None and sshd.stdout.readline().strip() == "ready"
    lab.server(lab.near, 5901, name="x11vnc", greeting=b"RFB 003.008\n")
    lab.server(lab.near, 8080, name="webserver")
    lab.client(link.far_ns, link.near_ip, [22, 5901, 8080])
    return link.far_ip


def _collect(lab: Lab, *args: str) -> dict[str, Any]:
    done = lab.run(lab.near, [sys.executable, "-c", COLLECT, *args])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_ssh_and_vnc_sessions_with_user_peer_and_rtt(lab: Lab) -> None:  # noqa: F811
    far_ip = _farm(lab)
    result = _collect(lab)
    sessions = sorted(result["sessions"], key=lambda s: s["kind"])
    assert [(s["kind"], s["remote_ip"]) for s in sessions] == [("ssh", far_ip), ("vnc", far_ip)]
    ssh, vnc = sessions
    assert ssh["user"] == pwd.getpwuid(NOBODY).pw_name  # the privilege-separated child's user
    assert vnc["user"] == "root"  # x11vnc runs as the desktop's user: here the test's
    for session in sessions:
        # The line only ever adds delay, so the kernel's minimum can't undercut the configured RTT.
        assert session["min_rtt_ms"] >= RTT_MS and session["rtt_ms"] >= session["min_rtt_ms"]
    assert result["problems"] == []


def test_without_root_sessions_come_from_default_ports_and_errors_say_so(lab: Lab) -> None:  # noqa: F811
    _farm(lab)
    result = _collect(lab, "unprivileged")
    kinds = sorted(s["kind"] for s in result["sessions"])
    assert kinds == ["ssh", "vnc"]  # 22 and 5901 are default ports; 8080 is nobody's session
    assert all(s["min_rtt_ms"] >= RTT_MS for s in result["sessions"])  # netlink needs no root
    assert any("without root" in p and "sshd" in p and "22" in p for p in result["problems"])
    assert any("without root" in p and "x11vnc" in p and "5900-5909" in p for p in result["problems"])


def test_macos_is_reported_unavailable() -> None:
    with pytest.raises(ProbeUnavailable, match="Linux and Windows only"):
        SessionsProbe(ProbeContext(platform="darwin")).collect()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("RDP-Tcp#12", "rdp"), ("rdp-tcp#3", "rdp"), ("Console", "console"), ("Services", None), (None, None)],
)
def test_session_name_kinds(name: str | None, kind: str | None) -> None:
    assert session_kind(name) == kind


@pytest.mark.parametrize(
    ("family", "address", "ip"),
    [
        pytest.param(2, bytes([0, 0, 175, 45, 176, 71]) + bytes(14), "175.45.176.71", id="ipv4-at-offset-2"),
        pytest.param(23, bytes(2) + bytes.fromhex("20010db8000000000000000000000071") + bytes(2),
                     "2001:db8::71", id="ipv6-unverified-layout"),
        pytest.param(0, bytes(20), None, id="console-has-no-client"),
    ],
)
def test_wts_client_address(family: int, address: bytes, ip: str | None) -> None:
    assert parse_client_address(family, address) == ip
