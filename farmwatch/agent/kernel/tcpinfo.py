"""Kernel TCP round-trip times of any process's connections (Linux NETLINK_SOCK_DIAG).

The kernel keeps, per TCP socket, a smoothed RTT (``tcpi_rtt``) and the minimum RTT it ever saw
(``tcpi_min_rtt``), both in microseconds (``struct tcp_info``, include/uapi/linux/tcp.h). The
minimum is the physics: light in fibre covers ~200 km per ms one way, so a round trip of r ms
bounds the peer's distance to r x 100 km, and congestion only ever adds to it. ``ss -ti`` reads
the same numbers through inet_diag (``INET_DIAG_INFO``); we send inet_diag's dump request (the
TCPDIAG_GETSOCK form, one walk of the kernel's tables for IPv4 and IPv6; SOCK_DIAG_BY_FAMILY per
family where a kernel refuses it) and unpack the answer with :mod:`struct` (a netlink library cost
the agent more memory than everything else it reads). A caller that keeps only a few of the sockets
(the socket watch) gets a dump without tcp_info and a lookup of each kept socket with it. An
unprivileged process may dump every TCP socket of its network namespace with ``INET_DIAG_INFO``, so
the default path needs no root.

macOS exposes ``TCP_CONNECTION_INFO`` only for the caller's own sockets and Windows'
``GetPerTcpConnectionEStats`` needs administrator rights and per-connection enabling; neither is
implemented, and :func:`tcp_rtts` says so by raising :class:`RttUnavailable`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from farmwatch.errors import FarmwatchError

Pair = tuple[str, int, str, int]
"""(local_ip, local_port, remote_ip, remote_port) of one TCP connection."""

RttPair = tuple[float | None, float | None]
"""(rtt_ms, min_rtt_ms); ``None`` where the kernel has no sample yet."""

Keep = Callable[[int, int], bool]
"""(socket inode, local port) -> whether to parse that socket of a dump; the rest cost no parsing."""

# Kernel socket states (include/net/tcp_states.h); netlink filters by a bit mask of them.
TCP_ESTABLISHED = 1
TCP_LISTEN = 10
STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
ALL_STATES = sum(1 << state for state in STATE_NAMES)
# tcp_min_rtt() reports ~0U until the first RTT sample (include/net/tcp.h, lib/win_minmax.c).
_NO_SAMPLE = 0xFFFFFFFF

# Wire layouts, from the kernel's UAPI headers; all fields native-endian except where noted.
# include/uapi/linux/netlink.h: struct nlmsghdr {u32 len; u16 type; u16 flags; u32 seq; u32 pid},
# every message and attribute padded to 4 bytes; a dump ends with NLMSG_DONE, a refusal is
# NLMSG_ERROR carrying a negative errno.
_NETLINK_SOCK_DIAG = 4
_NLMSG_HEADER = struct.Struct("=IHHII")
_LENGTH_KIND = struct.Struct("=IH")  # the header's first two fields
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x01
_NLM_F_DUMP = 0x100 | 0x200  # NLM_F_ROOT | NLM_F_MATCH
_ERRNO = struct.Struct("=i")
# include/uapi/linux/sock_diag.h
_SOCK_DIAG_BY_FAMILY = 20
# include/uapi/linux/inet_diag.h: struct inet_diag_req_v2 {u8 family, protocol, ext, pad;
# u32 states; struct inet_diag_sockid id (48 bytes, all zero: no filter)}. Bit (INET_DIAG_INFO - 1)
# of idiag_ext asks for struct tcp_info as an INET_DIAG_INFO attribute.
_REQUEST = struct.Struct("=BBBxI48x")
_INET_DIAG_INFO = 2
_INFO_EXT = 1 << (_INET_DIAG_INFO - 1)
# The same request without NLM_F_DUMP and with a socket's own inet_diag_sockid (cookie included)
# asks for that one socket (inet_diag_get_exact): a hash lookup, not a walk. An ENOENT answer: it
# closed meanwhile.
_EXACT_REQUEST = struct.Struct("=BBBxI")  # then the 48-byte sockid, as the dump gave it
_SOCKID = slice(4, 52)  # of an inet_diag_msg
_LOOKUP_BATCH = 32  # lookups sent at once: their answers (about 400 bytes each) fit a netlink socket's receive buffer
_LOOKUP_LIMIT = 256  # kept sockets up to which lookups cost less than a second dump with tcp_info
# The same header's TCPDIAG_GETSOCK request, older than SOCK_DIAG_BY_FAMILY: struct inet_diag_req
# {u8 family, src_len, dst_len, ext; struct inet_diag_sockid id; u32 states; u32 dbs}. The kernel
# answers it (inet_diag_dump_compat in net/ipv4/inet_diag.c) with the family set to AF_UNSPEC: IPv4
# and IPv6 sockets in one walk of the TCP hash tables, where SOCK_DIAG_BY_FAMILY walks them once per
# family, and the walk is most of a dump's cost (bench/socket_watch_cost.py). Its answer holds the
# same inet_diag_msg records, typed TCPDIAG_GETSOCK. A kernel refusing it gets the two requests.
_TCPDIAG_GETSOCK = 18
_ONE_WALK_REQUEST = struct.Struct("=BBBB48xII")
# A request may carry an INET_DIAG_REQ_BYTECODE attribute: a filter the kernel runs on each socket
# before answering (inet_diag_bc_run in net/ipv4/inet_diag.c). Each op is struct inet_diag_bc_op
# {u8 code; u8 yes; u16 no}: on a true condition skip ``yes`` bytes, else ``no``; JMP always takes
# ``no``. A socket matches when the program ends exactly at its end; a jump 4 bytes past the end
# rejects (as ss does). A port comparison is two ops, the port in the second's ``no``. The kernel's
# audit (inet_diag_bc_audit) wants every jump target on the chain of ``yes`` steps, hence the JMPs.
_INET_DIAG_REQ_BYTECODE = 1
_BC_OP = struct.Struct("=BBH")
_BC_JMP = 1
_BC_S_GE, _BC_S_LE = 2, 3
_BC_RANGE_BYTES = 20  # S_GE (8), S_LE (8), JMP (4)
# struct inet_diag_msg {u8 family, state, timer, retrans; struct inet_diag_sockid {__be16 sport,
# dport; __be32 src[4], dst[4]; u32 if; u32 cookie[2]}; u32 expires, rqueue, wqueue, uid, inode}.
_DIAG_HEAD = struct.Struct("=BBxx")
_PORTS = struct.Struct("!HH")
_DIAG_TAIL = struct.Struct("=12xII")  # after the 48-byte sockid: expires, rqueue, wqueue skipped
_DIAG_MSG_SIZE = _DIAG_HEAD.size + 48 + _DIAG_TAIL.size
# From a message's start: nlmsg_len and nlmsg_type, then in its inet_diag_msg the local port's two
# bytes (big-endian) and the inode: a whole nlmsghdr and inet_diag_msg.
_LENGTH_KIND_PORT_INODE = struct.Struct("=IH10x" + "4xBB" + "62xI")
# include/uapi/linux/rtnetlink.h: struct rtattr {u16 len; u16 type}; the top two type bits are flags.
_RTATTR = struct.Struct("=HH")
_RTATTR_TYPE_MASK = 0x3FFF
# include/uapi/linux/tcp.h struct tcp_info: 8 one-byte fields, then u32 and u64 fields in order;
# tcpi_rtt is the 15th u32, tcpi_min_rtt follows 24 u32, 4 u64 and 3 more u32 (kernels >= 4.6).
_TCPI_RTT = struct.Struct("=I")
_TCPI_RTT_OFFSET = 8 + 15 * 4
_TCPI_MIN_RTT_OFFSET = 8 + 24 * 4 + 4 * 8 + 3 * 4
_RECV_BYTES = 64 * 1024  # the kernel sizes dump parts to at most 32 KiB


class RttUnavailable(FarmwatchError, OSError):
    """Kernel RTTs cannot be read here (OS without support, or netlink refused); says why."""


@dataclass(frozen=True)
class TcpSocket:
    """One TCP socket as the kernel's inet_diag dump reports it."""

    local_ip: str  # IPv4-mapped IPv6 addresses are given in IPv4 form
    local_port: int
    remote_ip: str
    remote_port: int
    state: str  # "ESTABLISHED", "LISTEN", ...
    uid: int  # owner of the socket
    inode: int  # matches /proc/<pid>/fd/* -> socket:[inode]
    rtt_ms: float | None  # smoothed RTT
    min_rtt_ms: float | None  # minimum RTT seen over the connection's life

    @property
    def pair(self) -> Pair:
        return (self.local_ip, self.local_port, self.remote_ip, self.remote_port)


def normalize_ip(address: str) -> str:
    """One spelling per address: no zone suffix, IPv4-mapped IPv6 as IPv4, canonical form."""
    parsed = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def rtts_from_tcp_info(rtt_us: int, min_rtt_us: int) -> RttPair:
    """(rtt_ms, min_rtt_ms) from tcp_info's microsecond fields; a socket without samples -> None."""
    if min_rtt_us == _NO_SAMPLE or (rtt_us == 0 and min_rtt_us == 0):
        return (None, None)
    return (rtt_us / 1000.0, min_rtt_us / 1000.0)


def local_port_filter(ranges: Sequence[tuple[int, int]]) -> bytes:
    """inet_diag bytecode keeping sockets whose local port lies in any inclusive (low, high) range."""
    program = b""
    for index, (low, high) in enumerate(ranges):
        left = _BC_RANGE_BYTES * (len(ranges) - index)  # bytes from this range's first op to the end
        last = index == len(ranges) - 1
        # Out of range: go to the next range (after the last one: 4 past the end, reject).
        # In range: the JMP jumps to the end (accept).
        program += _BC_OP.pack(_BC_S_GE, 8, 24 if last else 20) + _BC_OP.pack(0, 0, low)
        program += _BC_OP.pack(_BC_S_LE, 8, 16 if last else 12) + _BC_OP.pack(0, 0, high)
        program += _BC_OP.pack(_BC_JMP, 4, left - 16)
    return program


def dump_request(family: int, states: int, seq: int, bytecode: bytes = b"", tcp_info: bool = True) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request for the TCP sockets of ``family`` in ``states``, filtered
    in the kernel by ``bytecode`` (see :func:`local_port_filter`) when given, each with its tcp_info
    (RTTs) unless ``tcp_info`` is False."""
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, _INFO_EXT if tcp_info else 0, states)
    if bytecode:
        body += _RTATTR.pack(_RTATTR.size + len(bytecode), _INET_DIAG_REQ_BYTECODE) + bytecode
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def one_walk_request(states: int, seq: int, bytecode: bytes = b"", tcp_info: bool = True) -> bytes:
    """A TCPDIAG_GETSOCK dump request for the TCP sockets of both families in ``states``, filtered
    in the kernel by ``bytecode`` when given (see ``_TCPDIAG_GETSOCK``), each with its tcp_info
    unless ``tcp_info`` is False."""
    body = _ONE_WALK_REQUEST.pack(0, 0, 0, _INFO_EXT if tcp_info else 0, states, 0)
    if bytecode:
        body += _RTATTR.pack(_RTATTR.size + len(bytecode), _INET_DIAG_REQ_BYTECODE) + bytecode
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _TCPDIAG_GETSOCK, flags, seq, 0) + body


def parse_dump_part(data: bytes, keep: Keep | None = None) -> tuple[list[TcpSocket], bool]:
    """The sockets in one datagram of a dump answer, and whether it ended the dump (NLMSG_DONE);
    with ``keep``, only those whose inode and local port it accepts (the others are not parsed).

    Raises :class:`OSError` with the kernel's errno for NLMSG_ERROR (or a failed dump's DONE), and
    :class:`RttUnavailable` naming the offset for bytes that do not hold whole messages.
    """
    kept, done = _dump_part(data, keep)
    return [_parse_diag_msg(payload, at) for payload, at in kept], done


Kept = list[tuple[bytes, int]]
"""inet_diag_msg payloads of a dump answer with their offsets (named in errors), not parsed yet."""


def _dump_part(data: bytes, keep: Keep | None) -> tuple[Kept, bool]:
    """:func:`parse_dump_part` short of parsing the sockets."""
    found: Kept = []
    offset, end = 0, len(data)
    # One loop turn per socket the kernel sends (thousands per poll on a busy machine): the header
    # fields and keep's two are read in place with one unpack, and only a kept socket's bytes are
    # copied out. Past a message shorter than a socket's, the unpack reads the next one's bytes:
    # they are not used (the length says it is no socket).
    while offset < end:
        if end - offset >= _LENGTH_KIND_PORT_INODE.size:
            length, kind, port_high, port_low, inode = _LENGTH_KIND_PORT_INODE.unpack_from(data, offset)
        elif end - offset >= _NLMSG_HEADER.size:
            (length, kind), port_high, port_low, inode = _LENGTH_KIND.unpack_from(data, offset), 0, 0, 0
        else:
            raise _malformed(f"{end - offset} bytes left at offset {offset}, too few for a nlmsghdr")
        if length < _NLMSG_HEADER.size or offset + length > end:
            raise _malformed(f"message at offset {offset} claims {length} bytes of the {end - offset} left")
        if kind == _SOCK_DIAG_BY_FAMILY or kind == _TCPDIAG_GETSOCK:
            if keep is None or length < _LENGTH_KIND_PORT_INODE.size or keep(inode, port_high << 8 | port_low):
                found.append((data[offset + _NLMSG_HEADER.size:offset + length], offset))
        elif kind == _NLMSG_ERROR:
            payload = data[offset + _NLMSG_HEADER.size:offset + length]
            refusal = -_ERRNO.unpack_from(payload)[0] if len(payload) >= _ERRNO.size else 0
            if refusal <= 0:  # an acknowledgement, which a dump request does not ask for
                raise _malformed(f"NLMSG_ERROR at offset {offset} carries no errno")
            raise OSError(refusal, os.strerror(refusal))
        elif kind == _NLMSG_DONE:  # a dump that failed part-way puts its negative errno here
            payload = data[offset + _NLMSG_HEADER.size:offset + length]
            status = _ERRNO.unpack_from(payload)[0] if len(payload) >= _ERRNO.size else 0
            if status < 0:
                raise OSError(-status, os.strerror(-status))
            return found, True
        offset += _align(length)
    return found, False


def tcp_sockets(states: int = ALL_STATES, platform: str = sys.platform,
                local_ports: Sequence[tuple[int, int]] = (), keep: Keep | None = None) -> list[TcpSocket]:
    """Every IPv4 and IPv6 TCP socket of this network namespace in ``states`` (a bit mask), only
    those with a local port in ``local_ports`` (inclusive ranges) when given: both filters run in
    the kernel, so the sockets left out cost neither copying nor parsing. ``keep`` (inode, local port
    -> bool) skips the parsing of the sockets it refuses."""
    if not platform.startswith("linux"):
        raise RttUnavailable(_UNSUPPORTED.get(platform, f"kernel TCP RTT is not read on {platform}"))
    bytecode = local_port_filter(local_ports) if local_ports else b""
    try:
        if _one_walk.answered is not False:
            try:
                found = _sockets(lambda tcp_info: [one_walk_request(states, 1, bytecode, tcp_info)], keep)
            except RttUnavailable:
                raise
            except OSError:
                if _one_walk.answered:
                    raise  # answered before: the dump failed, not the kind of request
                _one_walk.answered = False
            else:
                _one_walk.answered = True
                return found
        families = (socket.AF_INET, socket.AF_INET6)
        return _sockets(lambda tcp_info: [dump_request(family, states, seq, bytecode, tcp_info)
                                          for seq, family in enumerate(families, 1)], keep)
    except RttUnavailable:
        raise
    except OSError as failure:
        raise RttUnavailable(f"NETLINK_SOCK_DIAG refused the TCP socket dump: {failure}") from failure


class _OneWalk:
    """Whether this kernel answers :func:`one_walk_request`: None until asked; refused once, never again."""

    answered: bool | None = None


_one_walk = _OneWalk()


def _sockets(requests: Callable[[bool], list[bytes]], keep: Keep | None) -> list[TcpSocket]:
    """The sockets the kernel answers ``requests(with tcp_info)`` with, those ``keep`` accepts.

    With ``keep``, the dump leaves tcp_info out: the kernel fills it in for every socket it sends
    and it is two thirds of the bytes, for the few sockets kept. Those are looked up one by one with
    it, unless so many are kept that a second dump with it costs less."""
    if keep is None:
        return [_parse_diag_msg(payload, at) for payload, at in _dump(requests(True), None)]
    kept = _dump(requests(False), keep)
    if len(kept) > _LOOKUP_LIMIT:
        return [_parse_diag_msg(payload, at) for payload, at in _dump(requests(True), keep)]
    return _looked_up(kept)


def _dump(requests: list[bytes], keep: Keep | None) -> Kept:
    """The sockets the kernel answers ``requests`` (dump requests, sent one after the other) with."""
    found: Kept = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        for request in requests:
            diag.sendto(request, (0, 0))
            done = False
            while not done:
                part, done = _dump_part(diag.recv(_RECV_BYTES), keep)
                found.extend(part)
    return found


def _looked_up(kept: Kept) -> list[TcpSocket]:
    """The dumped sockets ``kept`` (without tcp_info) as the kernel answers a lookup of each with it;
    one that closed since the dump as the dump saw it, its RTTs unknown."""
    found: list[TcpSocket] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        for start in range(0, len(kept), _LOOKUP_BATCH):
            batch = kept[start:start + _LOOKUP_BATCH]
            diag.sendto(b"".join(_exact_request(payload, seq) for seq, (payload, _) in enumerate(batch)), (0, 0))
            answers: dict[int, bytes] = {}
            for _ in batch:  # one datagram per lookup, the socket or an NLMSG_ERROR
                answer = diag.recv(_RECV_BYTES)
                if len(answer) < _NLMSG_HEADER.size:
                    raise _malformed(f"a lookup's answer has {len(answer)} bytes, too few for a nlmsghdr")
                answers[_NLMSG_HEADER.unpack_from(answer)[3]] = answer
            for seq, (payload, at) in enumerate(batch):
                if seq not in answers:
                    raise _malformed(f"no answer to lookup {seq} of {len(batch)}")
                try:
                    answered, _ = parse_dump_part(answers[seq])
                except OSError as failure:
                    if failure.errno != errno.ENOENT or isinstance(failure, RttUnavailable):
                        raise
                    answered = [_parse_diag_msg(payload, at)]
                if len(answered) != 1:
                    raise _malformed(f"lookup {seq} was answered with {len(answered)} sockets")
                found.extend(answered)
    return found


def _exact_request(payload: bytes, seq: int) -> bytes:
    """A lookup of the socket a dump's inet_diag_msg ``payload`` describes, with its tcp_info."""
    body = _EXACT_REQUEST.pack(payload[0], socket.IPPROTO_TCP, _INFO_EXT, ALL_STATES) + payload[_SOCKID]
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, seq, 0) + body


def tcp_rtts(pairs: Iterable[Pair]) -> dict[Pair, RttPair]:
    """Kernel (rtt_ms, min_rtt_ms) of each given connection, keyed by the pair exactly as given.

    A pair the kernel no longer knows (closed meanwhile) maps to ``(None, None)``. Raises
    :class:`RttUnavailable` where the kernel cannot be asked (see the module docstring).
    """
    wanted = {pair: _normal_pair(pair) for pair in pairs}
    if not wanted:
        return {}
    by_pair = {sock.pair: (sock.rtt_ms, sock.min_rtt_ms) for sock in tcp_sockets(ALL_STATES & ~(1 << TCP_LISTEN))}
    return {given: by_pair.get(normal, (None, None)) for given, normal in wanted.items()}


def _normal_pair(pair: Pair) -> Pair:
    local_ip, local_port, remote_ip, remote_port = pair
    return (normalize_ip(local_ip), int(local_port), normalize_ip(remote_ip), int(remote_port))


def _parse_diag_msg(payload: bytes, at: int) -> TcpSocket:
    """A :class:`TcpSocket` from one inet_diag_msg and its attributes (``at``: offset, for errors)."""
    if len(payload) < _DIAG_MSG_SIZE:
        raise _malformed(f"inet_diag_msg at offset {at} has {len(payload)} of {_DIAG_MSG_SIZE} bytes")
    family, state = _DIAG_HEAD.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise _malformed(f"inet_diag_msg at offset {at} is of address family {family}")
    sport, dport = _PORTS.unpack_from(payload, _DIAG_HEAD.size)
    width = 4 if family == socket.AF_INET else 16
    src = payload[_DIAG_HEAD.size + 4:_DIAG_HEAD.size + 4 + width]
    dst = payload[_DIAG_HEAD.size + 20:_DIAG_HEAD.size + 20 + width]
    uid, inode = _DIAG_TAIL.unpack_from(payload, _DIAG_HEAD.size + 48)
    info = _attribute(payload, _DIAG_MSG_SIZE, _INET_DIAG_INFO, at)
    rtt: RttPair = (None, None)
    if info is not None:
        if len(info) < _TCPI_MIN_RTT_OFFSET + _TCPI_RTT.size:
            raise _malformed(f"tcp_info at offset {at} has {len(info)} bytes, too few for tcpi_min_rtt")
        rtt = rtts_from_tcp_info(_TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)[0],
                                 _TCPI_RTT.unpack_from(info, _TCPI_MIN_RTT_OFFSET)[0])
    return TcpSocket(
        local_ip=_address(family, src),
        local_port=sport,
        remote_ip=_address(family, dst),
        remote_port=dport,
        state=STATE_NAMES.get(state, str(state)),
        uid=uid,
        inode=inode,
        rtt_ms=rtt[0],
        min_rtt_ms=rtt[1],
    )


_V4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96 (RFC 4291 2.5.5.2)


def _address(family: int, raw: bytes) -> str:
    """:func:`normalize_ip` of a packed address, without its parsing where inet_ntop's form is already
    the canonical one (IPv4, IPv4-mapped IPv6): the socket watcher formats every socket each poll."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return normalize_ip(socket.inet_ntop(family, raw))


def _attribute(payload: bytes, offset: int, wanted: int, at: int) -> bytes | None:
    """The value of the first rtattr of type ``wanted`` from ``offset`` on, or None."""
    while offset < len(payload):
        if len(payload) - offset < _RTATTR.size:
            raise _malformed(f"attribute at offset {at} + {offset} is cut short")
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size or offset + length > len(payload):
            raise _malformed(f"attribute at offset {at} + {offset} claims {length} bytes of the "
                             f"{len(payload) - offset} left")
        if kind & _RTATTR_TYPE_MASK == wanted:
            return payload[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return None


def _align(length: int) -> int:
    """NLMSG_ALIGN / RTA_ALIGN: netlink pads every message and attribute to 4 bytes."""
    return (length + 3) & ~3


def _malformed(where: str) -> RttUnavailable:
    return RttUnavailable(f"NETLINK_SOCK_DIAG answer is malformed: {where}")


_UNSUPPORTED = {
    "darwin": "kernel TCP RTT of other processes' connections is not available on macOS "
    "(TCP_CONNECTION_INFO reads only the agent's own sockets); rtt fields stay null",
    "win32": "kernel TCP RTT on Windows needs GetPerTcpConnectionEStats with administrator "
    "rights, which this agent does not implement; rtt fields stay null",
}
