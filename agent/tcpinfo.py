"""Kernel TCP round-trip times of any process's connections (Linux NETLINK_SOCK_DIAG).

The kernel keeps, per TCP socket, a smoothed RTT (``tcpi_rtt``) and the minimum RTT it ever saw
(``tcpi_min_rtt``), both in microseconds (``struct tcp_info``, include/uapi/linux/tcp.h). The
minimum is the physics: light in fibre covers ~200 km per ms one way, so a round trip of r ms
bounds the peer's distance to r x 100 km, and congestion only ever adds to it. ``ss -ti`` reads
the same numbers through inet_diag (``INET_DIAG_INFO``); we ask netlink directly through pyroute2,
which decodes ``tcp_info`` including ``tcpi_min_rtt``. An unprivileged process may dump every
TCP socket of its network namespace with ``INET_DIAG_INFO``, so the default path needs no root.

macOS exposes ``TCP_CONNECTION_INFO`` only for the caller's own sockets and Windows'
``GetPerTcpConnectionEStats`` needs administrator rights and per-connection enabling; neither is
implemented, and :func:`tcp_rtts` says so by raising :class:`RttUnavailable`.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Pair = tuple[str, int, str, int]
"""(local_ip, local_port, remote_ip, remote_port) of one TCP connection."""

RttPair = tuple[float | None, float | None]
"""(rtt_ms, min_rtt_ms); ``None`` where the kernel has no sample yet."""

# Kernel socket states (include/net/tcp_states.h); netlink filters by a bit mask of them.
TCP_ESTABLISHED = 1
TCP_LISTEN = 10
STATE_NAMES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
ALL_STATES = sum(1 << state for state in STATE_NAMES)
# Bit (INET_DIAG_INFO - 1) of idiag_ext asks for struct tcp_info (include/uapi/linux/inet_diag.h).
_EXT_INFO = 1 << (2 - 1)
# tcp_min_rtt() reports ~0U until the first RTT sample (include/net/tcp.h, lib/win_minmax.c).
_NO_SAMPLE = 0xFFFFFFFF


class RttUnavailable(OSError):
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


def tcp_sockets(states: int = ALL_STATES, platform: str = sys.platform) -> list[TcpSocket]:
    """Every IPv4 and IPv6 TCP socket of this network namespace in ``states`` (a bit mask)."""
    if not platform.startswith("linux"):
        raise RttUnavailable(_UNSUPPORTED.get(platform, f"kernel TCP RTT is not read on {platform}"))
    try:
        from pyroute2 import DiagSocket
    except ImportError as missing:
        raise RttUnavailable(f"pyroute2 could not be imported ({missing}); kernel TCP RTTs unknown")
    found: list[TcpSocket] = []
    try:
        with DiagSocket() as diag:
            diag.bind()
            for family in (socket.AF_INET, socket.AF_INET6):
                for message in diag.get_sock_stats(family=family, states=states, extensions=_EXT_INFO):
                    found.append(_from_message(message))
    except OSError as failure:
        raise RttUnavailable(f"NETLINK_SOCK_DIAG refused the TCP socket dump: {failure}")
    return found


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


def _from_message(message: Any) -> TcpSocket:
    """A :class:`TcpSocket` from one decoded pyroute2 ``inet_diag_msg`` (untyped library object)."""
    get = message.__getitem__
    info = message.get_attr("INET_DIAG_INFO")
    rtt: RttPair = (None, None)
    if info is not None:
        rtt = rtts_from_tcp_info(info["tcpi_rtt"], info["tcpi_min_rtt"])
    return TcpSocket(
        local_ip=normalize_ip(get("idiag_src")),
        local_port=get("idiag_sport"),
        remote_ip=normalize_ip(get("idiag_dst")),
        remote_port=get("idiag_dport"),
        state=STATE_NAMES.get(get("idiag_state"), str(get("idiag_state"))),
        uid=get("idiag_uid"),
        inode=get("idiag_inode"),
        rtt_ms=rtt[0],
        min_rtt_ms=rtt[1],
    )


_UNSUPPORTED = {
    "darwin": "kernel TCP RTT of other processes' connections is not available on macOS "
    "(TCP_CONNECTION_INFO reads only the agent's own sockets); rtt fields stay null",
    "win32": "kernel TCP RTT on Windows needs GetPerTcpConnectionEStats with administrator "
    "rights, which this agent does not implement; rtt fields stay null",
}
