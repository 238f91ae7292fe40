"""Latency to the company's anchors: timed TCP connects (default) or ICMP echo (optional, raw).

Why security cares: light in fibre covers ~200 km per ms one way, so a round trip of r ms to an
anchor bounds the laptop's distance from it to r x 100 km, and congestion only adds. A low minimum
to a nearby anchor proves proximity; a high one to every anchor says the laptop (or its VPN exit)
is far away. Sources: Gueye et al., IMC 2004 (constraint-based geolocation); Octant, NSDI 2007.

A TCP connect is one round trip (SYN out, SYN-ACK back) and needs no privileges. A refused
connection counts as an answer: the RST came back from the anchor's host, which is a round trip
just the same. A timeout or an unreachable network is a lost sample. "Could not connect" is a
measurement (loss), never an exception.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from farmwatch.contract import Anchor, LatencyProbe

Sampler = Callable[[str, int, float], float | None]
"""(ip, port, timeout_s) -> RTT in ms, or None for a lost sample."""


def tcp_connect_rtt(ip: str, port: int, timeout_s: float) -> float | None:
    """One timed TCP connect; refused counts as answered (see the module docstring)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        started = time.perf_counter()
        try:
            sock.connect((ip, port))
        except ConnectionRefusedError:
            pass
        except OSError:  # timeout, unreachable, reset before the handshake
            return None
        return (time.perf_counter() - started) * 1000.0


def icmp_echo_rtt(ip: str, port: int, timeout_s: float) -> float | None:
    """One ICMP echo through scapy (needs CAP_NET_RAW and the ``raw`` extra); ``port`` unused."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.sendrecv import sr1

    request = IPv6(dst=ip) / ICMPv6EchoRequest() if ":" in ip else IP(dst=ip) / ICMP()
    answer = sr1(request, timeout=timeout_s, verbose=False)
    if answer is None:
        return None
    return (float(answer.time) - float(request.sent_time or 0)) * 1000.0  # capture timestamps, seconds


def has_cap_net_raw(proc_root: str = "/proc") -> bool:
    """Whether this process holds CAP_NET_RAW (bit 13 of CapEff, include/uapi/linux/capability.h)."""
    try:
        with open(f"{proc_root}/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 13 & 1)
    except OSError:
        pass
    return os.name != "posix"  # Windows: raw ICMP sockets need no capability bit


def measure(anchor: Anchor, samples: int, timeout_s: float, method: str = "tcp",
            sampler: Sampler = tcp_connect_rtt) -> LatencyProbe:
    """``samples`` round trips to one anchor, summarised; an unresolvable name sends nothing."""
    ip: str | None
    try:
        ip = str(socket.getaddrinfo(anchor.address, anchor.port, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, UnicodeError):
        ip = None
    rtts = [] if ip is None else [r for r in (sampler(ip, anchor.port, timeout_s) for _ in range(samples))
                                  if r is not None]
    return LatencyProbe(
        target=anchor.name,
        address=anchor.address,
        method=method,  # type: ignore[arg-type]
        sent=0 if ip is None else samples,
        received=len(rtts),
        rtt_min_ms=round(min(rtts), 3) if rtts else None,
        rtt_median_ms=round(statistics.median(rtts), 3) if rtts else None,
        rtt_max_ms=round(max(rtts), 3) if rtts else None,
    )


def measure_all(anchors: Sequence[Anchor], samples: int, timeout_s: float, method: str = "tcp",
                sampler: Sampler = tcp_connect_rtt) -> list[LatencyProbe]:
    """Every anchor, in parallel (one slow anchor must not delay the others), in anchor order."""
    if not anchors:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(anchors))) as pool:
        return list(pool.map(lambda a: measure(a, samples, timeout_s, method, sampler), anchors))
