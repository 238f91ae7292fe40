"""Windows Remote Desktop sessions: ``qwinsta`` (query session) and ``WTSClientAddress``.

A session whose name is ``RDP-Tcp#N`` (also the ``SESSIONNAME`` environment variable inside it)
is a Remote Desktop session; ``WTSQuerySessionInformationW(..., WTSClientAddress)`` returns a
``WTS_CLIENT_ADDRESS`` {DWORD AddressFamily; BYTE Address[20]} whose IPv4 address starts at
``Address[2]`` (Microsoft Learn, WTS_CLIENT_ADDRESS structure). The IPv6 layout is not
documented; we read it from the same offset and the tests mark that as unverified. RTT of these
sessions is not read on Windows (see :mod:`farmwatch.agent.kernel.tcpinfo`), which ``errors`` says.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from farmwatch.agent.probes.base import RunCommand
from farmwatch.contract import Session

AF_INET, AF_INET6 = 2, 23  # Windows address family numbers (ws2def.h)
_WTS_CLIENT_ADDRESS = 14  # WTS_INFO_CLASS.WTSClientAddress (wtsapi32.h)


@dataclass(frozen=True)
class WtsSession:
    """One row of ``qwinsta``."""

    name: str  # SESSIONNAME, e.g. "rdp-tcp#3", "console", "services"
    user: str | None
    id: int
    state: str  # Active, Conn, Disc, Listen ...


def session_kind(session_name: str | None) -> str | None:
    """"rdp" for RDP-Tcp#N, "console" for Console, else None (services, listeners)."""
    name = (session_name or "").lower()
    if name.startswith("rdp-tcp#"):
        return "rdp"
    return "console" if name == "console" else None


def parse_qwinsta(output: str) -> list[WtsSession]:
    """Rows of ``qwinsta`` output. The name is read by column (it may be blank, as may the user)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines or "USERNAME" not in lines[0]:
        return []
    user_at = lines[0].index("USERNAME")
    sessions = []
    for line in lines[1:]:
        rest = line[user_at:].split()
        if len(rest) >= 2 and rest[0].isdigit():
            user, identifier, state = None, rest[0], rest[1]
        elif len(rest) >= 3 and rest[1].isdigit():
            user, identifier, state = rest[0], rest[1], rest[2]
        else:
            continue
        sessions.append(WtsSession(name=line[1:user_at].strip(), user=user, id=int(identifier), state=state))
    return sessions


def parse_client_address(family: int, address: bytes) -> str | None:
    """The client IP from a WTS_CLIENT_ADDRESS; None for AF_UNSPEC (a console session)."""
    if family == AF_INET:
        return str(ipaddress.IPv4Address(address[2:6]))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(address[2:18]))
    return None


def rdp_sessions(run: RunCommand, problem: Callable[[str], None]) -> list[Session]:
    """Active RDP sessions with their client address (Windows only)."""
    try:
        rows = parse_qwinsta(run(["qwinsta"]))
    except (OSError, subprocess.SubprocessError) as failed:
        problem(f"qwinsta failed, RDP sessions unknown: {failed}")
        return []
    problem("RTT of RDP sessions is not read on Windows (GetPerTcpConnectionEStats needs "
            "administrator rights and is not implemented); rtt fields stay null")
    return [Session(kind="rdp", user=row.user, remote_ip=_client_address(row.id), rtt_ms=None, min_rtt_ms=None)
            for row in rows if session_kind(row.name) == "rdp" and row.state == "Active"]


def _client_address(session_id: int) -> str | None:
    """``WTSQuerySessionInformationW`` on this server (Windows only; wtsapi32)."""
    import ctypes
    from ctypes import wintypes

    class WtsClientAddress(ctypes.Structure):
        _fields_ = [("AddressFamily", wintypes.DWORD), ("Address", ctypes.c_ubyte * 20)]

    wtsapi = ctypes.WinDLL("wtsapi32")  # type: ignore[attr-defined]
    buffer, size = ctypes.POINTER(WtsClientAddress)(), wintypes.DWORD()
    if not wtsapi.WTSQuerySessionInformationW(None, session_id, _WTS_CLIENT_ADDRESS,
                                              ctypes.byref(buffer), ctypes.byref(size)):
        return None
    try:
        return parse_client_address(buffer.contents.AddressFamily, bytes(buffer.contents.Address))
    finally:
        wtsapi.WTSFreeMemory(buffer)
