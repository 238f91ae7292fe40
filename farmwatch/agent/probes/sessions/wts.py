"""Windows Remote Desktop sessions through the WTS API (wtsapi32), called with ctypes.

``WTSEnumerateSessionsW`` lists the sessions as ``WTS_SESSION_INFOW`` {DWORD SessionId; LPWSTR
pWinStationName; WTS_CONNECTSTATE_CLASS State}; a session is an active Remote Desktop session when
its WinStation name is ``RDP-Tcp#N`` and its state is ``WTSActive`` (0). Names and states are the
API's own, so a non-English Windows reads the same (``qwinsta``'s text translates its headers and
states, which is why the API is used). ``WTSQuerySessionInformationW`` gives the user (``WTSUserName``, a string)
and the client (``WTSClientAddress``: a ``WTS_CLIENT_ADDRESS`` {DWORD AddressFamily; BYTE
Address[20]} whose IPv4 address starts at ``Address[2]``); every buffer the API hands out goes back
through ``WTSFreeMemory``. Sources: Microsoft Learn, wtsapi32.h (WTSEnumerateSessionsW,
WTS_SESSION_INFOW, WTS_CONNECTSTATE_CLASS, WTS_INFO_CLASS, WTS_CLIENT_ADDRESS). The IPv6 layout is
not documented; it is read from the same offset and the tests mark that as unverified. RTT of these
sessions is not read on Windows (see :mod:`farmwatch.agent.kernel.tcpinfo`), which ``errors`` says.
"""

from __future__ import annotations

import ctypes
import ipaddress
from collections.abc import Callable
from ctypes import wintypes
from dataclasses import dataclass
from typing import Any

from farmwatch.contract import Session

AF_INET, AF_INET6 = 2, 23  # Windows address family numbers (ws2def.h)
WTS_CURRENT_SERVER_HANDLE = None  # wtsapi32.h: ((HANDLE)NULL), this machine
WTS_ACTIVE = 0  # WTS_CONNECTSTATE_CLASS.WTSActive
WTS_USER_NAME = 5  # WTS_INFO_CLASS.WTSUserName
WTS_CLIENT_ADDRESS = 14  # WTS_INFO_CLASS.WTSClientAddress


class WtsSessionInfo(ctypes.Structure):
    """WTS_SESSION_INFOW."""

    _fields_ = [("SessionId", wintypes.DWORD), ("pWinStationName", wintypes.LPWSTR), ("State", ctypes.c_int)]


class WtsClientAddress(ctypes.Structure):
    """WTS_CLIENT_ADDRESS."""

    _fields_ = [("AddressFamily", wintypes.DWORD), ("Address", ctypes.c_ubyte * 20)]


@dataclass(frozen=True)
class WtsSession:
    """One session as WTSEnumerateSessionsW lists it."""

    id: int
    name: str  # WinStation name, e.g. "RDP-Tcp#3", "Console", "Services"
    state: int  # WTS_CONNECTSTATE_CLASS


@dataclass(frozen=True)
class Wtsapi:
    """The three wtsapi32 functions used, and how to read the thread's last Win32 error."""

    dll: Any  # ctypes.WinDLL("wtsapi32", use_last_error=True), or a stand-in with the same functions
    last_error: Callable[[], int]


def load_wtsapi() -> Wtsapi:
    """wtsapi32 of this Windows; raises OSError (AttributeError outside Windows) when there is none."""
    return Wtsapi(ctypes.WinDLL("wtsapi32", use_last_error=True), ctypes.get_last_error)  # type: ignore[attr-defined]


def session_kind(session_name: str | None) -> str | None:
    """"rdp" for RDP-Tcp#N, "console" for Console, else None (services, listeners)."""
    name = (session_name or "").lower()
    if name.startswith("rdp-tcp#"):
        return "rdp"
    return "console" if name == "console" else None


def parse_client_address(family: int, address: bytes) -> str | None:
    """The client IP from a WTS_CLIENT_ADDRESS; None for AF_UNSPEC (a console session)."""
    if family == AF_INET:
        return str(ipaddress.IPv4Address(address[2:6]))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(address[2:18]))
    return None


def enumerate_sessions(api: Wtsapi) -> list[WtsSession]:
    """Every session on this machine; raises OSError naming the Win32 error when the call fails."""
    table, count = ctypes.POINTER(WtsSessionInfo)(), wintypes.DWORD()
    if not api.dll.WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, ctypes.byref(table), ctypes.byref(count)):
        raise OSError(f"WTSEnumerateSessionsW failed with Win32 error {api.last_error()}")
    try:
        return [WtsSession(table[i].SessionId, table[i].pWinStationName or "", table[i].State)
                for i in range(count.value)]
    finally:
        api.dll.WTSFreeMemory(table)


def _query(api: Wtsapi, session_id: int, info_class: int, read: Callable[[int, int], Any]) -> Any:
    """``read(address, size)`` of one WTSQuerySessionInformationW buffer; None when the call fails."""
    buffer, size = ctypes.c_void_p(), wintypes.DWORD()
    if not api.dll.WTSQuerySessionInformationW(WTS_CURRENT_SERVER_HANDLE, session_id, info_class,
                                               ctypes.byref(buffer), ctypes.byref(size)):
        return None
    try:
        return read(buffer.value or 0, size.value) if buffer.value else None
    finally:
        api.dll.WTSFreeMemory(buffer)


def user_name(api: Wtsapi, session_id: int) -> str | None:
    name: str | None = _query(api, session_id, WTS_USER_NAME, lambda at, _size: ctypes.wstring_at(at))
    return name or None


def client_address(api: Wtsapi, session_id: int) -> str | None:
    def read(at: int, size: int) -> str | None:
        if size < ctypes.sizeof(WtsClientAddress):
            return None
        found = WtsClientAddress.from_address(at)
        return parse_client_address(found.AddressFamily, bytes(found.Address))

    address: str | None = _query(api, session_id, WTS_CLIENT_ADDRESS, read)
    return address


def rdp_sessions(problem: Callable[[str], None], api: Wtsapi | None = None) -> list[Session]:
    """Active RDP sessions with their user and client address (Windows only)."""
    try:
        api = api or load_wtsapi()
        sessions = enumerate_sessions(api)
    except (OSError, AttributeError) as failed:
        problem(f"the WTS API is not usable, RDP sessions unknown: {failed}")
        return []
    problem("RTT of RDP sessions is not read on Windows (GetPerTcpConnectionEStats needs "
            "administrator rights and is not implemented); rtt fields stay null")
    return [Session(kind="rdp", user=user_name(api, row.id), remote_ip=client_address(api, row.id),
                    rtt_ms=None, min_rtt_ms=None)
            for row in sessions if session_kind(row.name) == "rdp" and row.state == WTS_ACTIVE]
