"""Windows RDP sessions through the WTS API, on this Linux box, against a stand-in wtsapi32.

``FakeWtsapi32`` is written by hand (there is no Windows here to record from): C function pointers
with wtsapi32's prototypes that answer the way the documented API does — ``WTSEnumerateSessionsW``
hands out an array of ``WTS_SESSION_INFOW``, ``WTSQuerySessionInformationW`` a ``WCHAR`` string
(``WTSUserName``) or a ``WTS_CLIENT_ADDRESS``, each buffer to be returned through ``WTSFreeMemory``
(Microsoft Learn, wtsapi32.h). The agent's ctypes code (structures, out-parameters, reading and
freeing the buffers) runs unchanged against it; only the DLL is replaced.
"""

from __future__ import annotations

import ctypes
from ctypes import wintypes
from typing import Any

import pytest

from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.sessions.probe import SessionsProbe
from farmwatch.agent.probes.sessions.wts import (
    WTS_CLIENT_ADDRESS,
    WTS_USER_NAME,
    Wtsapi,
    WtsClientAddress,
    WtsSessionInfo,
    enumerate_sessions,
    rdp_sessions,
)
from farmwatch.contract import Session

ACTIVE, DISCONNECTED, LISTEN = 0, 4, 6  # WTS_CONNECTSTATE_CLASS
_ENUMERATE = ctypes.CFUNCTYPE(wintypes.BOOL, ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD,
                              ctypes.POINTER(ctypes.POINTER(WtsSessionInfo)), ctypes.POINTER(wintypes.DWORD))
_QUERY = ctypes.CFUNCTYPE(wintypes.BOOL, ctypes.c_void_p, wintypes.DWORD, ctypes.c_int,
                          ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wintypes.DWORD))
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class FakeWtsapi32:
    """Sessions as (id, WinStation name, state, user or None, (family, address bytes) or None)."""

    def __init__(self, sessions: list[tuple[int, str, int, str | None, tuple[int, bytes] | None]],
                 fail_with: int | None = None) -> None:
        self.sessions = {row[0]: row for row in sessions}
        self.fail_with = fail_with
        self.outstanding: dict[int, Any] = {}  # buffers handed out and not yet freed, by address
        self.WTSEnumerateSessionsW = _ENUMERATE(self._enumerate)
        self.WTSQuerySessionInformationW = _QUERY(self._query)
        self.WTSFreeMemory = _FREE(self._free)

    def _hand_out(self, buffer: Any) -> int:
        self.outstanding[ctypes.addressof(buffer)] = buffer
        return ctypes.addressof(buffer)

    def _enumerate(self, server: int | None, reserved: int, version: int, table: Any, count: Any) -> int:
        assert (server, reserved, version) == (None, 0, 1)
        if self.fail_with is not None:
            return 0
        rows = (WtsSessionInfo * len(self.sessions))()
        for row, (session_id, name, state, _, _) in zip(rows, self.sessions.values(), strict=True):
            row.SessionId, row.pWinStationName, row.State = session_id, name, state
        table[0] = ctypes.cast(self._hand_out(rows), ctypes.POINTER(WtsSessionInfo))
        count[0] = len(self.sessions)
        return 1

    def _query(self, server: int | None, session_id: int, info_class: int, buffer: Any, size: Any) -> int:
        _, _, _, user, client = self.sessions[session_id]
        if info_class == WTS_USER_NAME:
            answer: Any = ctypes.create_unicode_buffer(user or "")
        elif info_class == WTS_CLIENT_ADDRESS:
            family, address = client or (0, b"")
            answer = WtsClientAddress(family, (ctypes.c_ubyte * 20)(*address.ljust(20, b"\0")))
        else:
            return 0
        buffer[0] = self._hand_out(answer)
        size[0] = ctypes.sizeof(answer)
        return 1

    def _free(self, address: int | None) -> None:
        assert address in self.outstanding, "freed something the API did not hand out"
        del self.outstanding[address]


SERVER = [
    (0, "Services", DISCONNECTED, None, None),
    (1, "Console", ACTIVE, "owner", (0, b"")),
    (2, "RDP-Tcp#3", ACTIVE, "mwilson", (2, bytes([0, 0, 175, 45, 176, 71]))),
    (3, "RDP-Tcp#5", DISCONNECTED, "bob", (2, bytes([0, 0, 10, 0, 0, 9]))),
    (65536, "RDP-Tcp", LISTEN, None, None),
]


def test_active_rdp_sessions_with_user_and_client_and_every_buffer_freed() -> None:
    fake = FakeWtsapi32(SERVER)
    problems: list[str] = []
    found = rdp_sessions(problems.append, Wtsapi(fake, lambda: 0))
    assert found == [Session(kind="rdp", user="mwilson", remote_ip="175.45.176.71", rtt_ms=None, min_rtt_ms=None)]
    assert fake.outstanding == {}
    assert [p for p in problems if "RTT of RDP sessions" in p]


def test_sessions_are_listed_with_the_apis_names_and_states() -> None:
    listed = enumerate_sessions(Wtsapi(FakeWtsapi32(SERVER), lambda: 0))
    assert [(s.id, s.name, s.state) for s in listed] == [(row[0], row[1], row[2]) for row in SERVER]


def test_a_failing_api_is_named_with_its_win32_error() -> None:
    problems: list[str] = []
    assert rdp_sessions(problems.append, Wtsapi(FakeWtsapi32(SERVER, fail_with=5), lambda: 5)) == []
    assert problems == ["the WTS API is not usable, RDP sessions unknown: WTSEnumerateSessionsW failed with "
                        "Win32 error 5"]


@pytest.mark.parametrize("client", [(23, bytes(2) + bytes.fromhex("20010db8000000000000000000000071")), (0, b"")],
                         ids=["ipv6-unverified-layout", "no-client-address"])
def test_client_address_families(client: tuple[int, bytes]) -> None:
    fake = FakeWtsapi32([(2, "RDP-Tcp#1", ACTIVE, "eve", client)])
    [session] = rdp_sessions(lambda _: None, Wtsapi(fake, lambda: 0))
    assert session.remote_ip == ("2001:db8::71" if client[0] == 23 else None)
    assert fake.outstanding == {}


def test_outside_windows_the_probe_says_the_wts_api_is_missing() -> None:
    probe = SessionsProbe(ProbeContext(platform="win32"))
    assert probe.collect() == []
    assert any("the WTS API is not usable" in p for p in probe.problems)
