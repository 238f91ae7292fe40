"""farmwatch.agent.kernel.tcpinfo against real loopback TCP connections and captured netlink answers.

The netlink answer is checked against the kernel's other door to the same numbers: the
``TCP_INFO`` socket option on our own socket (``struct tcp_info``, include/uapi/linux/tcp.h).
The parser is also fed the kernel's own bytes (tests/fixtures/netlink/), whole, cut short and
altered, since a hostile or buggy answer must become :class:`RttUnavailable`, not a crash.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from farmwatch.agent.kernel import tcpinfo
from farmwatch.agent.kernel.tcpinfo import (
    RttUnavailable,
    TcpSocket,
    normalize_ip,
    parse_dump_part,
    rtts_from_tcp_info,
    tcp_rtts,
    tcp_sockets,
)

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


CAPTURED = Path(__file__).parents[1] / "fixtures" / "netlink"
NLMSG_HEADER = struct.Struct("=IHHII")
NLMSG_ERROR, NLMSG_DONE, SOCK_DIAG_BY_FAMILY = 2, 3, 20
DIAG_MSG_SIZE = 72  # struct inet_diag_msg


def _sock(local: tuple[str, int], remote: tuple[str, int], state: str, inode: int,
          rtt: tuple[float | None, float | None]) -> TcpSocket:
    return TcpSocket(local[0], local[1], remote[0], remote[1], state, 0, inode, *rtt)


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        pytest.param("inet", [
            _sock(("127.0.0.1", 40000), ("0.0.0.0", 0), "LISTEN", 209933, (None, None)),
            _sock(("127.0.0.1", 40000), ("127.0.0.1", 50000), "ESTABLISHED", 209935, (0.018, 0.004)),
            _sock(("127.0.0.1", 50000), ("127.0.0.1", 40000), "ESTABLISHED", 209934, (0.026, 0.009)),
        ], id="ipv4"),
        pytest.param("inet6", [
            _sock(("::1", 40006), ("::", 0), "LISTEN", 209936, (None, None)),
            _sock(("::1", 50006), ("::1", 40006), "ESTABLISHED", 209937, (0.013, 0.004)),
            _sock(("::1", 40006), ("::1", 50006), "ESTABLISHED", 209938, (0.007, 0.004)),
        ], id="ipv6"),
    ],
)
def test_a_captured_multipart_dump_parses_to_its_sockets(family: str, expected: list[TcpSocket]) -> None:
    sockets, done = parse_dump_part((CAPTURED / f"{family}.0.bin").read_bytes())
    assert (sockets, done) == (expected, False)  # the sockets' part does not end the dump ...
    assert parse_dump_part((CAPTURED / f"{family}.1.bin").read_bytes()) == ([], True)  # ... NLMSG_DONE does


def test_a_live_dump_finds_a_new_loopback_connection_with_its_own_rtt() -> None:
    with _connected(socket.AF_INET, "127.0.0.1") as client:
        pair = _pair(client)
        found = [s for s in tcp_sockets() if s.pair == pair]
        _, own_min = _own_tcp_info(client)
        assert len(found) == 1 and found[0].state == "ESTABLISHED" and found[0].uid == os.getuid()
        assert found[0].rtt_ms is not None and 0 < found[0].rtt_ms < 1000  # loopback: well under a second
        assert found[0].min_rtt_ms == own_min / 1000.0


def _first_message() -> bytes:
    data = (CAPTURED / "inet.0.bin").read_bytes()
    return data[:NLMSG_HEADER.unpack_from(data)[0]]


def _message(kind: int, payload: bytes) -> bytes:
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), kind, 0, 1, 0) + payload


def _with_attribute(length: int, kind: int, value: bytes) -> bytes:
    """The captured first socket with its attributes replaced by one rtattr."""
    diag_msg = _first_message()[NLMSG_HEADER.size:NLMSG_HEADER.size + DIAG_MSG_SIZE]
    return _message(SOCK_DIAG_BY_FAMILY, diag_msg + struct.pack("=HH", length, kind) + value)


def test_every_cut_of_a_real_answer_is_refused_or_a_prefix() -> None:
    data = (CAPTURED / "inet.0.bin").read_bytes()
    whole, _ = parse_dump_part(data)
    refused = 0
    for cut in range(len(data)):
        try:
            sockets, done = parse_dump_part(data[:cut])
        except RttUnavailable as why:
            assert "malformed" in str(why)
            refused += 1
        else:
            assert not done and sockets == whole[:len(sockets)]
    assert refused > len(data) - 4 * len(whole)  # only the few cuts at message boundaries parse


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(NLMSG_HEADER.pack(8, SOCK_DIAG_BY_FAMILY, 0, 1, 0), "claims 8 bytes", id="length-below-header"),
        pytest.param(_message(SOCK_DIAG_BY_FAMILY, b"\0" * 40), "40 of 72 bytes", id="short-inet-diag-msg"),
        pytest.param(_message(SOCK_DIAG_BY_FAMILY, b"\x01" + b"\0" * 71), "address family 1", id="unknown-family"),
        pytest.param(_with_attribute(200, 2, b"\0" * 8), "claims 200 bytes", id="attribute-past-the-end"),
        pytest.param(_with_attribute(2, 2, b""), "claims 2 bytes", id="attribute-shorter-than-its-header"),
        pytest.param(_with_attribute(4 + 64, 2, b"\0" * 64), "too few for tcpi_min_rtt", id="short-tcp-info"),
        pytest.param(_message(NLMSG_ERROR, struct.pack("=i", 0)), "carries no errno", id="error-without-errno"),
    ],
)
def test_malformed_answers_are_refused_with_where(data: bytes, match: str) -> None:
    with pytest.raises(RttUnavailable, match=match):
        parse_dump_part(data)


def test_an_attribute_other_than_tcp_info_is_skipped() -> None:
    (sock,), done = parse_dump_part(_with_attribute(4 + 1, 8, b"\x03"))  # INET_DIAG_SHUTDOWN, padded
    assert sock.pair == ("127.0.0.1", 40000, "0.0.0.0", 0) and sock.rtt_ms is None and not done


@pytest.mark.parametrize("kind", [pytest.param(NLMSG_ERROR, id="error"), pytest.param(NLMSG_DONE, id="failed-dump")])
def test_a_kernel_refusal_carries_its_errno(kind: int) -> None:
    with pytest.raises(OSError) as refused:
        parse_dump_part(_first_message() + _message(kind, struct.pack("=i", -errno.EPERM)))
    assert refused.value.errno == errno.EPERM and not isinstance(refused.value, RttUnavailable)


def test_the_one_walk_request_answers_what_the_two_per_family_requests_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """TCPDIAG_GETSOCK (one walk of the hash tables for both families) and SOCK_DIAG_BY_FAMILY per
    family see the same sockets, kernel filters included; a kernel refusing the former gets the latter."""
    with _connected(socket.AF_INET, "127.0.0.1") as v4, _connected(socket.AF_INET6, "::1") as v6:
        ours = {_pair(v4), _pair(v6)}
        ports = [(v4.getsockname()[1], v4.getsockname()[1]), (v6.getsockname()[1], v6.getsockname()[1])]

        def read() -> list[tuple[object, ...]]:
            return sorted((s.pair, s.state, s.inode) for s in tcp_sockets(local_ports=ports))

        one_walk = read()
        assert tcpinfo._one_walk.answered is True
        monkeypatch.setattr(tcpinfo._one_walk, "answered", False)  # as after a refusal
        per_family = read()
    assert one_walk == per_family and ours <= {pair for pair, _, _ in one_walk}  # others may share a port number


def test_a_refused_one_walk_request_falls_back_to_one_request_per_family(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpinfo._one_walk, "answered", None)
    monkeypatch.setattr(tcpinfo, "_TCPDIAG_GETSOCK", 17)  # a type no inet_diag kernel knows: refused
    with _connected(socket.AF_INET, "127.0.0.1") as client:
        assert _pair(client) in {s.pair for s in tcp_sockets()}
    assert tcpinfo._one_walk.answered is False


def _sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """(type, flags, idiag_ext) of every netlink request sent from now on."""
    sent: list[tuple[int, int, int]] = []
    send = socket.socket.sendto

    def spy(sock: socket.socket, data: bytes, address: object) -> int:
        offset = 0
        while offset < len(data):
            length, kind, flags = struct.unpack_from("=IHH", data, offset)
            ext_at = 3 if kind == 18 else 2  # TCPDIAG_GETSOCK's inet_diag_req, else inet_diag_req_v2
            sent.append((kind, flags, data[offset + NLMSG_HEADER.size + ext_at]))
            offset += length
        return send(sock, data, address)

    monkeypatch.setattr(socket.socket, "sendto", spy)
    return sent


@pytest.mark.parametrize("lookup_limit", [256, 0], ids=["looked-up", "over-the-limit"])
def test_kept_sockets_have_the_rtts_a_full_dump_gives(monkeypatch: pytest.MonkeyPatch, lookup_limit: int) -> None:
    """With ``keep``, the dump asks for no tcp_info (two thirds of its bytes, filled in by the kernel for
    every socket it sends) and each kept socket is looked up with it; past the limit a second dump
    asks for it. Either way the kept sockets are those a full dump gives, with their own RTTs."""
    monkeypatch.setattr(tcpinfo, "_LOOKUP_LIMIT", lookup_limit)
    with _connected(socket.AF_INET, "127.0.0.1") as v4, _connected(socket.AF_INET6, "::1") as v6:
        pairs = {_pair(v4), _pair(v6)}
        ports = {pair[1] for pair in pairs}
        full = {s.pair: s for s in tcp_sockets() if s.pair in pairs}
        sent = _sent(monkeypatch)
        kept = {s.pair: s for s in tcp_sockets(keep=lambda inode, port: port in ports) if s.pair in pairs}
        own_min = {_pair(v4): _own_tcp_info(v4)[1], _pair(v6): _own_tcp_info(v6)[1]}
    assert kept.keys() == full.keys() == pairs
    for pair, sock in kept.items():
        assert (sock.state, sock.inode, sock.uid) == (full[pair].state, full[pair].inode, full[pair].uid)
        assert sock.rtt_ms is not None and sock.min_rtt_ms == own_min[pair] / 1000.0
    dumps = [ext for _, flags, ext in sent if flags & 0x300]
    lookups = [kind for kind, flags, _ in sent if not flags & 0x300]
    assert dumps[0] == 0  # the first dump leaves tcp_info out
    if lookup_limit:
        assert len(dumps) == 1 and len(lookups) >= 2 and set(lookups) == {20}  # SOCK_DIAG_BY_FAMILY, one socket each
    else:
        assert dumps[1:] == [2] and not lookups  # the second dump asks for INET_DIAG_INFO


def test_a_kept_socket_gone_before_its_lookup_is_kept_as_the_dump_saw_it() -> None:
    with _connected(socket.AF_INET, "127.0.0.1") as client:
        port = client.getsockname()[1]
        request = tcpinfo.dump_request(socket.AF_INET, 1 << tcpinfo.TCP_ESTABLISHED, 1, tcp_info=False)
        [(payload, at)] = [kept for kept in tcpinfo._dump([request], lambda inode, local: local == port)]
    gone = payload[:6] + struct.pack("!H", 1) + payload[8:]  # the peer's port: 1, where no connection is
    [sock] = tcpinfo._looked_up([(gone, at)])
    assert (sock.local_port, sock.remote_port, sock.state) == (port, 1, "ESTABLISHED")
    assert (sock.rtt_ms, sock.min_rtt_ms) == (None, None)
