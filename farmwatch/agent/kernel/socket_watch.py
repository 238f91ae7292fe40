"""Connections seen through a reporting window, from polls of the kernel's TCP socket table.

The probes read sockets at the window's end, so a remote session that starts and ends between two
reports used to leave no trace. A :class:`SocketWatcher` dumps the TCP sockets every
``period_seconds`` over NETLINK_SOCK_DIAG (:mod:`farmwatch.agent.kernel.tcpinfo`), filtered in the
kernel by state and, where the caller knows its ports, by local port, so the sockets left out are
neither copied nor parsed. A ``focus`` function (the probe's) names the socket inodes worth
parsing (those its processes hold) and no dump is made while there are none; a ``claim`` function
says which of the new established sockets are its and who owns them. The watcher keeps, per
claimed socket, the first and last poll that saw it established, the least ``min_rtt`` over those
polls and the owner as found by the poll that first saw it, so a socket closed before the window's
end still has its process and tool.

Why polling and not events: the kernel announces only a socket's destruction
(SKNLGRP_INET_TCP_DESTROY, what ``ss -E`` reads), after the owning process has let go of it, so
the owner could no longer be found; a poll every few seconds finds it while it is held. A session
shorter than one period can be missed; first/last seen are exact to one period
(``bench/socket_watch_cost.py`` prints what each period costs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from farmwatch.agent.kernel.tcpinfo import TCP_ESTABLISHED, RttUnavailable, TcpSocket, tcp_sockets

Owner = TypeVar("Owner")

PortRanges = Sequence[tuple[int, int]]
Claim = Callable[[list[TcpSocket], list[TcpSocket]], dict[int, Owner]]
"""(new established sockets, the dump) -> socket inode -> owner, for the sockets that are the
caller's; the rest are offered again while they last (a claim function caches what it ruled out)."""
Keep = Callable[[int], bool]
Dump = Callable[[int, PortRanges, Keep | None], list[TcpSocket]]
"""(state mask, local port ranges or empty for all, which inodes to parse or None for all) -> the
kernel's sockets; :func:`netlink_dump`."""
Focus = Callable[[], set[int] | None]
"""The inodes of the sockets worth parsing now (e.g. those the watched processes hold), or None for
every socket. An empty set while nothing watched is open skips the dump: its kernel-side walk of
the whole TCP hash table is most of a poll's cost, and parsing the rest."""

SIGHTING_LIMIT = 1024  # claimed sockets held per window; more are counted, not kept (memory bound)


def netlink_dump(states: int, local_ports: PortRanges, keep: Keep | None) -> list[TcpSocket]:
    """The default :data:`Dump`: one NETLINK_SOCK_DIAG dump, filtered in the kernel."""
    return tcp_sockets(states, local_ports=local_ports, keep=keep)


@dataclass(frozen=True)
class Sighting(Generic[Owner]):
    """One claimed TCP connection as the polls of one window saw it."""

    socket: TcpSocket  # as the latest poll that saw it found it (rtt_ms: the latest smoothed RTT)
    owner: Owner  # who held it, as found by the poll that first saw it
    first_seen: float  # clock time of the first poll that saw it established
    last_seen: float  # clock time of the latest poll that saw it established
    min_rtt_ms: float | None  # least kernel min_rtt over those polls
    open: bool  # established at the latest poll; False: it ended inside the window

    @property
    def duration_seconds(self) -> float:
        """From the first to the last poll that saw it: short of the truth by less than a period."""
        return self.last_seen - self.first_seen


@dataclass(frozen=True)
class Watched(Generic[Owner]):
    """What the watcher saw in one window."""

    sightings: list[Sighting[Owner]]
    polls: int  # polls that read the kernel's table
    dropped: int  # claimed sockets not kept (over the watcher's limit)
    failure: str | None  # why a poll failed (the latest such), if one did

    def problems(self) -> list[str]:
        """What the report's errors[] should say about this window's watching."""
        said = [f"socket watch: {self.failure}"] if self.failure else []
        if self.dropped:
            said.append(f"socket watch: {self.dropped} connection(s) not kept, over the limit of "
                        f"{len(self.sightings)} per window")
        return said


def _least(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


class SocketWatcher(Generic[Owner]):
    """Polls the kernel's TCP sockets every ``period_seconds`` on a thread between :meth:`start`
    and :meth:`stop`; :meth:`take` ends a window and returns what it saw."""

    def __init__(self, claim: Claim[Owner], period_seconds: float = 5.0, *,
                 focus: Focus = lambda: None, extra_states: int = 0, dump: Dump = netlink_dump,
                 clock: Callable[[], float] = time.time, limit: int = SIGHTING_LIMIT) -> None:
        self.claim = claim
        self.focus = focus
        self.period_seconds = period_seconds
        # Sockets in these states are dumped too (e.g. LISTEN, to tell inbound from outbound) but
        # only established ones are watched.
        self.states = (1 << TCP_ESTABLISHED) | extra_states
        self.local_ports: PortRanges = ()  # kernel filter; empty: every port
        self.dump = dump
        self.clock = clock
        self.limit = limit
        self.failure: str | None = None  # why a poll of this window failed (the latest such), if one did
        self.dropped = 0  # claimed sockets not kept this window (over ``limit``)
        self.polls = 0  # polls this window that read the table
        self._seen: dict[tuple[int, tuple[str, int, str, int]], Sighting[Owner]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Poll now and then every period on a daemon thread; idempotent."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._poll_safely()
        self._thread = threading.Thread(target=self._run, name="socket-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.period_seconds):
            self._poll_safely()

    def _poll_safely(self) -> None:
        """A poll whose failure (a claim function's bug, an unreadable /proc) becomes the window's
        ``failure`` instead of ending the thread: watching goes on at the next period."""
        try:
            self.poll()
        except Exception as error:  # noqa: BLE001 - turned into data, as the runner does
            with self._lock:
                self.failure = f"a poll failed: {type(error).__name__}: {error}"

    def poll(self) -> None:
        """Read the kernel's table once: new claimed sockets are added, gone ones marked ended."""
        with self._lock:
            now = self.clock()
            focus = self.focus()
            watched = {inode for (inode, _), seen in self._seen.items() if seen.open}
            if focus is not None and not focus and not watched:
                return  # nothing running that could be claimed, nothing open to follow
            keep = None if focus is None else (lambda inode: inode in focus or inode in watched)
            try:
                table = self.dump(self.states, self.local_ports, keep)
            except RttUnavailable as unavailable:
                self.failure = str(unavailable)
                return
            self.polls += 1
            established = [sock for sock in table if sock.state == "ESTABLISHED" and sock.inode]
            present = {(sock.inode, sock.pair): sock for sock in established}
            for key, seen in self._seen.items():
                sock = present.pop(key, None)
                if sock is not None:
                    self._seen[key] = replace(seen, socket=sock, last_seen=now, open=True,
                                              min_rtt_ms=_least(seen.min_rtt_ms, sock.min_rtt_ms))
                elif seen.open:
                    self._seen[key] = replace(seen, open=False)
            if not present:
                return
            owners = self.claim(list(present.values()), table)
            for key, sock in present.items():
                if sock.inode not in owners:
                    continue
                if len(self._seen) >= self.limit:
                    self.dropped += 1
                    continue
                self._seen[key] = Sighting(socket=sock, owner=owners[sock.inode], first_seen=now,
                                           last_seen=now, min_rtt_ms=sock.min_rtt_ms, open=True)

    def take(self) -> Watched[Owner]:
        """Poll once more, then end the window: every socket seen in it (oldest first); those that
        ended are forgotten, open ones carry into the next window with their first_seen."""
        self._poll_safely()
        with self._lock:
            window = Watched(sightings=sorted(self._seen.values(), key=lambda seen: seen.first_seen),
                             polls=self.polls, dropped=self.dropped, failure=self.failure)
            self._seen = {key: seen for key, seen in self._seen.items() if seen.open}
            self.dropped = self.polls = 0
            self.failure = None
        return window
