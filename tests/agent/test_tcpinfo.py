"""farmwatch.agent.tcpinfo against real loopback TCP connections.

The netlink answer is checked against the kernel's other door to the same numbers: the
``TCP_INFO`` socket option on our own socket (``struct tcp_info``, include/uapi/linux/tcp.h).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from farmwatch.agent.tcpinfo import RttUnavailable, normalize_ip, rtts_from_tcp_info, tcp_rtts, tcp_sockets

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="NETLINK_SOCK_DIAG is Linux-only")

# Offsets of tcpi_rtt and tcpi_min_rtt in struct tcp_info: 8 one-byte fields, then u32 and u64
# fields in the order of include/uapi/linux/tcp.h.
_RTT_OFFSET = 8 + 15 * 4
_MIN_RTT_OFFSET = 8 + 24 * 4 + 4 * 8 + 3 * 4


def _own_tcp_info(sock: socket.socket) -> tuple[int, int]:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    (rtt,) = struct.unpack_from("I", raw, _RTT_OFFSET)
    (min_rtt,) = struct.unpack_from("I", raw, _MIN_RTT_OFFSET)
    return rtt, min_rtt


@contextmanager
def _connected(family: int, host: str, listen_host: str | None = None) -> Iterator[socket.socket]:
    server = socket.socket(family)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind((listen_host or host, 0))
    server.listen()
    client = socket.create_connection((host, server.getsockname()[1]))
    accepted, _ = server.accept()
    client.sendall(b"ping")  # a data round trip gives the kernel an RTT sample
    accepted.recv(4)
    accepted.sendall(b"pong")
    client.recv(4)
    yield client
    for sock in (client, accepted, server):
        sock.close()


def _pair(sock: socket.socket) -> tuple[str, int, str, int]:
    local, remote = sock.getsockname(), sock.getpeername()
    return (local[0], local[1], remote[0], remote[1])


@pytest.mark.parametrize(
    ("family", "host", "listen_host"),
    [
        pytest.param(socket.AF_INET, "127.0.0.1", None, id="ipv4"),
        pytest.param(socket.AF_INET6, "::1", None, id="ipv6"),
        pytest.param(socket.AF_INET6, "::ffff:127.0.0.1", "::", id="ipv4-mapped"),
    ],
)
def test_netlink_matches_the_sockets_own_tcp_info(family: int, host: str, listen_host: str | None) -> None:
    with _connected(family, host, listen_host) as client:
        pair = _pair(client)
        rtts = tcp_rtts([pair])
        _, own_min = _own_tcp_info(client)
        assert list(rtts) == [pair]  # keyed by the pair exactly as the caller spelled it
        rtt_ms, min_rtt_ms = rtts[pair]
        assert rtt_ms is not None and rtt_ms > 0
        assert min_rtt_ms == own_min / 1000.0


def test_sees_another_process_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import socket,sys;s=socket.create_connection(('127.0.0.1',%d));s.sendall(b'x');"
         "print(s.getsockname()[1],flush=True);s.recv(1);sys.stdin.read()" % port],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        accepted, _ = server.accept()
        accepted.recv(1)
        accepted.sendall(b"y")
        assert child.stdout is not None
        child_port = int(child.stdout.readline())
        pair = ("127.0.0.1", child_port, "127.0.0.1", port)
        rtt_ms, min_rtt_ms = tcp_rtts([pair])[pair]
        assert rtt_ms is not None and min_rtt_ms is not None and min_rtt_ms <= rtt_ms
        owner = [s for s in tcp_sockets() if s.pair == pair]
        assert len(owner) == 1 and owner[0].state == "ESTABLISHED" and owner[0].inode > 0
    finally:
        child.kill()
        child.wait()
        server.close()


def test_unknown_connection_maps_to_nulls() -> None:
    closed = ("127.0.0.1", 1, "127.0.0.1", 2)
    assert tcp_rtts([closed]) == {closed: (None, None)}


def test_listeners_are_reported_with_their_state() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        port = server.getsockname()[1]
        states = {s.state for s in tcp_sockets() if s.local_port == port}
        assert states == {"LISTEN"}
    finally:
        server.close()


@pytest.mark.parametrize(
    ("rtt_us", "min_rtt_us", "expected"),
    [
        pytest.param(180_512, 179_990, (180.512, 179.99), id="sampled"),
        pytest.param(0, 0xFFFFFFFF, (None, None), id="no-sample-yet"),
        pytest.param(0, 0, (None, None), id="zeroed"),
    ],
)
def test_microseconds_become_milliseconds(rtt_us: int, min_rtt_us: int, expected: tuple) -> None:
    assert rtts_from_tcp_info(rtt_us, min_rtt_us) == expected


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_other_systems_say_why_they_cannot(platform: str) -> None:
    with pytest.raises(RttUnavailable, match="rtt fields stay null"):
        tcp_sockets(platform=platform)


@pytest.mark.parametrize(
    ("given", "normal"),
    [("::ffff:10.1.2.3", "10.1.2.3"), ("fe80::1%eth0", "fe80::1"), ("2001:DB8::1", "2001:db8::1")],
)
def test_address_spellings_are_normalized(given: str, normal: str) -> None:
    assert normalize_ip(given) == normal
