"""Connections seen through a reporting window, from polls of the kernel's TCP socket table.

The probes read sockets at the window's end, so a remote session that starts and ends between two
reports used to leave no trace. A :class:`SocketWatcher` is polled every ``period_seconds`` and
keeps, per socket its ``claim`` function says is its, the first and last poll that saw it
established, the least ``min_rtt`` over those polls and the owner as found by the poll that first
saw it, so a socket closed before the window's end still has its process and tool.

Every watcher of an agent (remote_access's and sessions') is polled by one :class:`SocketWatch`:
per poll, one listing of the running processes (what the watchers' ``focus`` functions look at)
and at most one NETLINK_SOCK_DIAG dump (:mod:`farmwatch.agent.kernel.tcpinfo`) for all of them,
filtered in the kernel by the states they ask for and, where every one of them knows its ports, by
local port; each watcher then gets the sockets it asked for, parsing only those some watcher
wants. A watcher's ``focus`` names the socket inodes worth parsing (those its processes hold); no
dump is made while no watcher has any and none follows an open socket. Watchers with the same
period are polled together (ticks fall on multiples of the period), so the agent's two watchers
cost one dump per period, not two.

Why polling and not events: the kernel announces only a socket's destruction
(SKNLGRP_INET_TCP_DESTROY, what ``ss -E`` reads), after the owning process has let go of it, so
the owner could no longer be found; a poll every few seconds finds it while it is held. A session
shorter than one period can be missed; first/last seen are exact to one period
(``bench/socket_watch_cost.py`` prints what each period costs).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

from farmwatch.agent.kernel.process_names import ProcessNames
from farmwatch.agent.kernel.tcpinfo import STATE_NAMES, TCP_ESTABLISHED, Keep, RttUnavailable, TcpSocket, tcp_sockets

Owner = TypeVar("Owner")

PortRanges = Sequence[tuple[int, int]]
Claim = Callable[[list[TcpSocket], list[TcpSocket]], dict[int, Owner]]
"""(new established sockets, the dump) -> socket inode -> owner, for the sockets that are the
caller's; the rest are offered again while they last (a claim function caches what it ruled out)."""
Dump = Callable[[int, PortRanges, Keep | None], list[TcpSocket]]
"""(state mask, local port ranges or empty for all, which sockets to parse or None for all) -> the
kernel's sockets; :func:`netlink_dump`."""
Focus = Callable[[Mapping[int, str]], set[int] | None]
"""(pid -> name of every running process, listed once per poll for all watchers) -> the inodes of
the sockets worth parsing now (e.g. those the watched processes hold), or None for every socket on
the watcher's ports. An empty set while nothing watched is open leaves the watcher out of the
poll: with every watcher left out there is no dump, whose kernel-side walk of the whole TCP hash
table is most of a poll's cost."""

SIGHTING_LIMIT = 1024  # claimed sockets held per window; more are counted, not kept (memory bound)
_SAME_TICK = 1e-3  # seconds: ticks of two periods this close are one poll
_STATE_BITS = {name: 1 << number for number, name in STATE_NAMES.items()}


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


@dataclass(frozen=True)
class _Ask:
    """What one watcher wants from a poll's dump."""

    watcher: SocketWatcher[Any]
    now: float  # the watcher's clock at this poll
    states: int  # bit mask of kernel states
    ports: PortRanges  # local port ranges; empty: every port
    inodes: set[int] | None  # the sockets to parse (its focus and those it follows); None: all

    def wants(self, inode: int, port: int) -> bool:
        return (self.inodes is None or inode in self.inodes) and (
            not self.ports or any(low <= port <= high for low, high in self.ports))


class SocketWatch:
    """Polls every joined :class:`SocketWatcher` on its period, on one thread, with one process
    listing and at most one kernel dump per poll however many watchers are due."""

    def __init__(self, proc_root: Path = Path("/proc"), dump: Dump = netlink_dump) -> None:
        self.dump = dump
        self.dumps = 0  # kernel dumps made (what the watchers cost; tests and bench count them)
        self._names = ProcessNames(proc_root)
        self._joined: list[SocketWatcher[Any]] = []
        self._changed = threading.Condition()  # guards _joined and _thread
        self._polling = threading.Lock()  # one poll at a time: the thread's, or a take()'s
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the polling thread runs (some watcher is joined)."""
        return self._thread is not None

    def joined(self, watcher: SocketWatcher[Any]) -> bool:
        return watcher in self._joined

    def join(self, watcher: SocketWatcher[Any]) -> None:
        """Poll ``watcher`` now, then on every tick of its period until :meth:`leave`; idempotent."""
        if watcher in self._joined:
            return
        self.poll([watcher])
        with self._changed:
            if watcher not in self._joined:
                self._joined.append(watcher)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="socket-watch", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def leave(self, watcher: SocketWatcher[Any]) -> None:
        """Stop polling ``watcher``; the thread ends (and is waited for) with the last one."""
        with self._changed:
            if watcher in self._joined:
                self._joined.remove(watcher)
            ending = self._thread if not self._joined else None
            if ending is not None:
                self._thread = None
            self._changed.notify_all()
        if ending is not None and ending is not threading.current_thread():
            ending.join()

    def _run(self) -> None:
        me = threading.current_thread()
        last = 0.0  # the latest tick polled: a wake-up a hair early must not poll it twice
        with self._changed:
            while self._thread is me:
                now = max(time.monotonic(), last)
                ticks = {watcher: _next_tick(now, watcher.period_seconds)
                         for watcher in self._joined if watcher.period_seconds > 0}
                if not ticks:
                    self._changed.wait()
                    continue
                due_at = min(ticks.values())
                if self._changed.wait(max(0.0, due_at - now)):
                    continue  # a watcher joined or left: plan again
                last = due_at
                due = [watcher for watcher, tick in ticks.items() if tick - due_at < _SAME_TICK]
                self._changed.release()
                try:
                    self.poll(due)
                finally:
                    self._changed.acquire()

    def poll(self, watchers: Sequence[SocketWatcher[Any]]) -> None:
        """One poll for ``watchers``: one process listing, at most one dump. A failure (a claim
        function's bug, a refused dump) becomes the failing watcher's ``failure``, never the
        others', and watching goes on at the next period."""
        with self._polling:
            running: Mapping[int, str] = self._names.current() if any(w.focus for w in watchers) else {}
            asks = []
            for watcher in watchers:
                try:
                    ask = watcher._ask(running)
                except Exception as error:  # noqa: BLE001 - turned into data, as the runner does
                    watcher._failed(error)
                    continue
                if ask is not None:
                    asks.append(ask)
            if not asks:
                return  # nothing running that could be claimed, nothing open to follow
            alone = asks[0] if len(asks) == 1 else None
            ports = () if any(not ask.ports for ask in asks) else [span for ask in asks for span in ask.ports]
            try:
                table = self.dump(_union(ask.states for ask in asks), ports, _keep(asks))
            except RttUnavailable as unavailable:
                for ask in asks:
                    ask.watcher._note(str(unavailable))
                return
            self.dumps += 1
            for ask in asks:
                mine = table if alone is not None else [
                    sock for sock in table
                    if _STATE_BITS.get(sock.state, 0) & ask.states and ask.wants(sock.inode, sock.local_port)]
                try:
                    ask.watcher._update(ask.now, mine)
                except Exception as error:  # noqa: BLE001 - turned into data, as the runner does
                    ask.watcher._failed(error)


_PORT_SET_LIMIT = 4096  # ports in one watcher's ranges up to which a set lookup replaces range tests


def _keep(asks: list[_Ask]) -> Keep | None:
    """Which sockets of the dump some watcher wants (None: all), as one cheap test: it runs for
    every socket the kernel sends, thousands per poll on a busy machine."""
    if len(asks) == 1:  # the kernel filtered by its ports already
        wanted = asks[0].inodes
        return None if wanted is None else (lambda inode, port: inode in wanted)
    inodes: set[int] = set()  # wanted whatever their port
    ports: set[int] = set()  # wanted whatever their inode
    others = []
    for ask in asks:
        span = sum(high - low + 1 for low, high in ask.ports)
        if ask.inodes is None and not ask.ports:
            return None
        if not ask.ports:
            inodes |= ask.inodes or set()
        elif ask.inodes is None and span <= _PORT_SET_LIMIT:
            ports.update(port for low, high in ask.ports for port in range(low, high + 1))
        else:
            others.append(ask)
    if not others:
        return lambda inode, port: inode in inodes or port in ports
    return lambda inode, port: inode in inodes or port in ports or any(ask.wants(inode, port) for ask in others)


def _next_tick(now: float, period: float) -> float:
    """The first multiple of ``period`` after ``now`` (ticks on a common grid: equal periods meet)."""
    return (math.floor(now / period + 1e-6) + 1) * period


def _union(masks: Any) -> int:
    found = 0
    for mask in masks:
        found |= mask
    return found


class SocketWatcher(Generic[Owner]):
    """The sightings of one consumer (a probe), polled by a :class:`SocketWatch` (its own unless
    given the agent's) every ``period_seconds`` between :meth:`start` and :meth:`stop`;
    :meth:`take` ends a window and returns what it saw."""

    def __init__(self, claim: Claim[Owner], period_seconds: float = 5.0, *, focus: Focus | None = None,
                 extra_states: int = 0, watch: SocketWatch | None = None,
                 clock: Callable[[], float] = time.time, limit: int = SIGHTING_LIMIT) -> None:
        self.claim = claim
        self.focus = focus  # None: every socket on local_ports
        self.period_seconds = period_seconds
        # Sockets in these states are dumped too (e.g. LISTEN, to tell inbound from outbound) but
        # only established ones are watched.
        self.states = (1 << TCP_ESTABLISHED) | extra_states
        self.local_ports: PortRanges = ()  # kernel filter; empty: every port
        self.watch = watch if watch is not None else SocketWatch()
        self.clock = clock
        self.limit = limit
        self.failure: str | None = None  # why a poll of this window failed (the latest such), if one did
        self.dropped = 0  # claimed sockets not kept this window (over ``limit``)
        self.polls = 0  # polls this window that read the table
        self._seen: dict[tuple[int, tuple[str, int, str, int]], Sighting[Owner]] = {}
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """Whether it is polled on its period (between start and stop)."""
        return self.watch.joined(self)

    def start(self) -> None:
        """Poll now and then every period; idempotent."""
        self.watch.join(self)

    def stop(self) -> None:
        self.watch.leave(self)

    def poll(self) -> None:
        """Read the kernel's table once (for this watcher alone): new claimed sockets are added,
        gone ones marked ended; a failure becomes the window's ``failure``."""
        self.watch.poll([self])

    def _ask(self, running: Mapping[int, str]) -> _Ask | None:
        """What this poll's dump should hold for this watcher; None: nothing (no dump for it)."""
        with self._lock:
            now = self.clock()
            focus = None if self.focus is None else self.focus(running)
            watched = {inode for (inode, _), seen in self._seen.items() if seen.open}
            if focus is not None and not focus and not watched:
                return None
            return _Ask(self, now, self.states, tuple(self.local_ports), None if focus is None else focus | watched)

    def _failed(self, error: Exception) -> None:
        self._note(f"a poll failed: {type(error).__name__}: {error}")

    def _note(self, failure: str) -> None:
        with self._lock:
            self.failure = failure

    def _update(self, now: float, table: list[TcpSocket]) -> None:
        """Fold one poll's dump in: new claimed sockets are added, gone ones marked ended."""
        with self._lock:
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
        self.poll()
        with self._lock:
            window = Watched(sightings=sorted(self._seen.values(), key=lambda seen: seen.first_seen),
                             polls=self.polls, dropped=self.dropped, failure=self.failure)
            self._seen = {key: seen for key, seen in self._seen.items() if seen.open}
            self.dropped = self.polls = 0
            self.failure = None
        return window
