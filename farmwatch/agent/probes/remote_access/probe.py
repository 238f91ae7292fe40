"""Remote-access software that is running, however it is named, with its listening ports and TCP sessions.

Reads the process table and the TCP socket table (on Linux one pass over /proc, one netlink dump
and the descriptors of the processes concerned; psutil elsewhere) and recognises a catalogued tool
(``agent/data/rmm_catalog.json``: LOLRMM plus vendor-documented facts) by, in this order: its process
NAME (never its command line), the service it runs as (systemd unit from ``/proc/PID/cgroup``,
Windows service, launchd job), an executable PATH inside a catalogued install folder, the code-signing
subject of its executable (Windows and macOS, valid signatures only), or a connection to an address
that a DNS answer gave for a catalogued relay domain (answers seen on the wire on Linux, the
resolver cache on Windows; see :mod:`.dns_answers`; other names are never kept). ``matched_by`` lists every way that agreed. Security cares because a laptop farm needs remote
control (MITRE ATT&CK T1219), and renaming ``AnyDesk.exe`` to ``notepad.exe`` must not hide it. A
connection is ``inbound`` when its local port is one the tool listens on, else ``outbound``.

Through the window (Linux), a socket watcher polls the kernel's established TCP sockets every
``probe_options.remote_access.watch_period_seconds`` (default 5; 0 turns it off) and keeps those a
recognised tool holds (:mod:`.watch`), so a session that began and ended between two reports is
reported too: ``state`` ``CLOSED`` with ``first_seen``, ``last_seen``, ``duration_seconds`` and its
least ``min_rtt_ms``; connections still open at the window's end carry the same times.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from datetime import datetime, timezone
from collections.abc import Iterator
from typing import Annotated, Any, NamedTuple, TypeAlias

import psutil
from pydantic import Field

from farmwatch.agent.kernel.process_table import process_ids
from farmwatch.agent.kernel.socket_owners import socket_holders
from farmwatch.agent.kernel.socket_watch import SocketWatcher
from farmwatch.agent.kernel.tcpinfo import (
    TCP_LISTEN,
    Pair,
    RttPair,
    RttUnavailable,
    normalize_ip,
    tcp_rtts,
)
from farmwatch.agent.probes.base import Probe, ProbeContext, ProbeOptions
from farmwatch.agent.probes.remote_access.catalog import CATALOG_PATH, catalog
from farmwatch.agent.probes.remote_access.dns_answers import (
    WINDOWS_RESOLVER_CACHE,
    DnsAnswerListener,
    RelayAddresses,
    learn_windows_resolver_cache,
)
from farmwatch.agent.probes.remote_access.services import running_services, services_by_pid, unit_of
from farmwatch.agent.probes.remote_access.signers import read_signers
from farmwatch.agent.probes.remote_access.watch import ToolOwner, ToolSockets, add_sightings
from farmwatch.contract import Connection, MatchedBy, RemoteAccessTool

__all__ = ["CATALOG_PATH", "RemoteAccessProbe", "tool_for"]

SIGNER_CACHE_LIMIT = 4096  # executables whose signer is remembered between windows


class RemoteAccessOptions(ProbeOptions):
    # Seconds between polls of the kernel's socket table (bench/socket_watch_cost.py: what a period
    # costs); 0 turns watching off and only the window's end is read.
    watch_period_seconds: Annotated[float, Field(ge=0, le=300, strict=True)] = 5.0


def tool_for(process_name: str) -> str | None:
    """The catalogue id of a process name, or None: case-insensitive, ``.exe`` ignored."""
    return catalog().by_name(process_name)


class Socket(NamedTuple):
    """One TCP socket of a process, as read from the OS."""

    local_ip: str
    local_port: int
    remote_ip: str | None
    remote_port: int | None
    state: str


def _socket(conn: Any) -> Socket:
    remote = conn.raddr or None
    return Socket(
        local_ip=normalize_ip(conn.laddr.ip),
        local_port=conn.laddr.port,
        remote_ip=normalize_ip(remote.ip) if remote else None,
        remote_port=remote.port if remote else None,
        state=conn.status,
    )


def connections_of(sockets: list[Socket], rtts: dict[Pair, RttPair],
                   domains: dict[str, str] | None = None) -> tuple[list[int], list[Connection]]:
    """A process's listening ports and its connections with a peer, each with a direction (and the
    catalogued relay domain of the peer, where ``domains`` knows one)."""
    listening = sorted({s.local_port for s in sockets if s.state == psutil.CONN_LISTEN})
    connections = []
    for s in sockets:
        if s.remote_ip is None or s.remote_port is None:
            continue
        rtt_ms, min_rtt_ms = rtts.get((s.local_ip, s.local_port, s.remote_ip, s.remote_port), (None, None))
        connections.append(Connection(
            remote_ip=s.remote_ip,
            remote_port=s.remote_port,
            local_port=s.local_port,
            state=s.state,
            direction="inbound" if s.local_port in listening else "outbound",
            rtt_ms=rtt_ms,
            min_rtt_ms=min_rtt_ms,
            domain=(domains or {}).get(s.remote_ip),
        ))
    return listening, connections


class _Match:
    """A process recognised as a tool, and every way that said so."""

    def __init__(self, process: psutil.Process, tool: str, way: MatchedBy) -> None:
        self.process, self.tool, self.ways = process, tool, [way]

    def agree(self, tool: str | None, way: MatchedBy) -> None:
        if tool == self.tool and way not in self.ways:
            self.ways.append(way)


class _ProcessRow:
    """A process from the /proc pass, not yet a psutil handle (most processes never need one)."""

    def __init__(self, pid: int, info: dict[str, Any]) -> None:
        self.pid, self.info = pid, info


_Process: TypeAlias = psutil.Process | _ProcessRow


def _handle(process: _Process) -> psutil.Process | None:
    """The psutil handle of a recognised process (None: it exited meanwhile)."""
    if isinstance(process, psutil.Process):
        return process
    try:
        handle = psutil.Process(process.pid)
    except psutil.Error:
        return None
    handle.info = process.info
    return handle


class RemoteAccessProbe(Probe[list[RemoteAccessTool]]):
    """Catalogued remote-access tools that are running, however named, with their TCP sessions."""

    name = "remote_access"
    section = "remote_access"

    def __init__(self, context: ProbeContext) -> None:
        super().__init__(context)
        self.catalog = catalog()
        self.relays = RelayAddresses(self.catalog)
        self._listener: DnsAnswerListener | None = None
        self._listener_problem: str | None = None
        self._signers: dict[str, str | None] = {}
        self._claims = ToolSockets(context.proc_root, self.catalog)
        self._watcher: SocketWatcher[ToolOwner] = SocketWatcher(self._claims, focus=self._claims.focus,
                                                                extra_states=1 << TCP_LISTEN,
                                                                watch=context.kernel.watch,
                                                                clock=context.clock)
        self._watching = False
        self._started = False  # start() ran (Linux): the watcher follows the options from then on

    def start(self) -> None:
        """Watch sockets through the window, and listen to DNS answers (Linux with CAP_NET_RAW;
        without it, say so once and go on)."""
        if self.context.platform != "linux":
            return
        self._started = True
        self._watch(self.read_options(RemoteAccessOptions).watch_period_seconds)
        if self._listener is not None:
            return
        listener = DnsAnswerListener(self.relays)
        try:
            listener.start()
        except PermissionError:
            self._listener_problem = ("relay domains are not learned from DNS answers: listening needs "
                                      "CAP_NET_RAW (run the agent as its service)")
            return
        self._listener = listener

    def stop(self) -> None:
        self._watch(0)
        self._started = False
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _watch(self, period_seconds: float) -> None:
        """Poll every ``period_seconds`` from now on (0: not at all)."""
        self._watcher.period_seconds = period_seconds
        if period_seconds and not self._watching:
            self._watcher.start()
        elif not period_seconds and self._watching:
            self._watcher.stop()
        self._watching = bool(period_seconds)

    def collect(self) -> list[RemoteAccessTool]:
        period = self.read_options(RemoteAccessOptions).watch_period_seconds
        if self._listener_problem:
            self.problem(self._listener_problem)
            self._listener_problem = None
        watched = self._watcher.take() if self._watching else None
        if watched is not None:
            for problem in watched.problems():
                self.problem(problem)
        if self.context.platform == "win32":
            self._read_resolver_cache()
        matches = self._recognise()
        by_pid, table_read, rtts = self._tcp_sockets(matches)
        if table_read:
            self._recognise_by_relay(matches, by_pid)
        else:
            by_pid = self._sockets_one_by_one([m.process for m in matches.values()])
        if self._started:
            self._claims.follow({pid: (m.tool, m.process.info["name"] or "", m.ways) for pid, m in matches.items()})
            self._watch(period)  # the collector's config may have changed it
        if not matches and not (watched and watched.sightings):
            return []
        pairs = [(s.local_ip, s.local_port, s.remote_ip, s.remote_port)
                 for pid in matches for s in by_pid.get(pid, []) if s.remote_ip is not None and s.remote_port is not None]
        if rtts is None:  # not read with the sockets: ask the kernel for these connections'
            try:
                rtts = tcp_rtts(pairs)
            except RttUnavailable as unavailable:
                self.problem(str(unavailable))
                rtts = {}
        found = []
        for pid, match in matches.items():
            sockets = by_pid.get(pid, [])
            domains = {s.remote_ip: relay[1] for s in sockets if s.remote_ip and (relay := self._relay(s.remote_ip))}
            listening, connections = connections_of(sockets, rtts, domains)
            created = match.process.info["create_time"]
            found.append(RemoteAccessTool(
                tool=match.tool,
                process=match.process.info["name"] or "",
                pid=pid,
                started_at=datetime.fromtimestamp(created, timezone.utc) if created else None,
                listening=listening,
                connections=connections,
                matched_by=match.ways,
            ))
        if watched is None:
            return found
        return add_sightings(found, watched.sightings, self._domain)

    def _read_resolver_cache(self) -> None:
        """Relay addresses from Windows' DNS client cache (where the agent has no packet listener)."""
        try:
            learn_windows_resolver_cache(self.context.run(WINDOWS_RESOLVER_CACHE), self.relays)
        except (OSError, subprocess.SubprocessError) as failed:
            self.problem(f"cannot read the DNS client cache: {failed}")

    def _recognise(self) -> dict[int, _Match]:
        """Processes recognised by name, service, install folder or signer."""
        services = self._services()
        matches: dict[int, _Match] = {}
        unsigned: list[tuple[psutil.Process, str]] = []
        for process in self._processes():
            name, exe = process.info["name"], process.info["exe"]
            service_tools = [self.catalog.by_service(s) for s in services(process.pid)]
            ways: list[tuple[str | None, MatchedBy]] = [
                (self.catalog.by_name(name) if name else None, "name"),
                *[(tool, "service") for tool in service_tools],
                (self.catalog.by_path(exe) if exe else None, "path"),
            ]
            for tool, way in ways:
                if tool is None:
                    continue
                if process.pid in matches:
                    matches[process.pid].agree(tool, way)
                elif (handle := _handle(process)) is not None:
                    matches[process.pid] = _Match(handle, tool, way)
            if process.pid not in matches and exe and isinstance(process, psutil.Process) \
                    and self.context.platform in ("win32", "darwin"):
                unsigned.append((process, exe))
        for process, exe in unsigned:
            tool = self._signer_tool(exe, [e for _, e in unsigned])
            if tool:
                matches[process.pid] = _Match(process, tool, "signer")
        return matches

    def _processes(self) -> Iterator[_Process]:
        """Every process with ``info`` holding its name, create_time and exe (as psutil's process_iter
        gives them); on Linux from one pass over /proc, a psutil handle made only for a recognised one."""
        if self.context.platform != "linux":
            yield from psutil.process_iter(["name", "create_time", "exe"])
            return
        for row in self.context.kernel.processes():  # the collection's one /proc pass
            yield _ProcessRow(row.pid, {"name": row.name, "create_time": row.create_time, "exe": row.exe})

    def _services(self) -> Any:
        """A function pid → the names of the services that process runs."""
        if self.context.platform == "linux":
            return lambda pid: [unit] if (unit := unit_of(pid, self.context.proc_root)) else []
        try:
            by_pid = services_by_pid(running_services(self.context.platform, self.context.run))
        except (OSError, subprocess.SubprocessError, psutil.Error) as failed:
            self.problem(f"cannot list running services: {failed}")
            by_pid = {}
        return lambda pid: by_pid.get(pid, [])

    def _signer_tool(self, exe: str, batch: list[str]) -> str | None:
        """The tool whose publisher signed ``exe``; signers are read for the whole batch at once and cached."""
        if exe not in self._signers:
            unknown = [path for path in dict.fromkeys(batch) if path not in self._signers]
            if len(self._signers) + len(unknown) > SIGNER_CACHE_LIMIT:
                self._signers.clear()
            try:
                signed = read_signers(unknown, self.context.platform, self.context.run)
            except (OSError, subprocess.SubprocessError) as failed:
                self.problem(f"cannot read code signatures: {failed}")
                signed = {}
            self._signers.update({path: signed.get(path) for path in unknown})
        signer = self._signers.get(exe)
        return self.catalog.by_signer(signer) if signer else None

    def _relay(self, address: str) -> tuple[str, str] | None:
        """(tool, domain) for a peer address: learned from DNS, or a catalogued relay address."""
        learned = self.relays.lookup(address)
        if learned:
            return learned
        tool = self.catalog.by_address(address)
        return (tool, address) if tool else None

    def _domain(self, address: str) -> str | None:
        relay = self._relay(address)
        return relay[1] if relay else None

    def _recognise_by_relay(self, matches: dict[int, _Match], by_pid: dict[int, list[Socket]]) -> None:
        """Processes holding a connection to a catalogued relay, whatever else they are."""
        for pid, sockets in by_pid.items():
            for s in sockets:
                relay = self._relay(s.remote_ip) if s.remote_ip else None
                if relay is None:
                    continue
                if pid in matches:
                    matches[pid].agree(relay[0], "domain")
                    continue
                try:
                    process = psutil.Process(pid)
                    process.info = process.as_dict(["name", "create_time"])
                except psutil.Error:
                    break
                matches[pid] = _Match(process, relay[0], "domain")

    def _tcp_sockets(self, matches: dict[int, _Match]
                     ) -> tuple[dict[int, list[Socket]], bool, dict[Pair, RttPair] | None]:
        """The TCP sockets of recognised processes and of any process holding one to a relay, whether
        the system-wide table could be read, and the kernel RTTs when they were read with it."""
        processes = [match.process for match in matches.values()]
        by_pid: dict[int, list[Socket]] = defaultdict(list)
        if self.context.platform == "linux":
            try:
                by_pid, rtts = self._kernel_sockets(set(matches))
            except RttUnavailable as unavailable:
                self.problem(f"{unavailable}; sockets read through psutil instead")
            else:
                self._note_unattributable(processes)
                return by_pid, True, rtts
        try:
            table = psutil.net_connections(kind="tcp")
        except psutil.AccessDenied:
            # macOS without root: the system-wide table needs privileges, a process's own may not.
            return by_pid, False, None
        for conn in table:
            if conn.pid:
                by_pid[conn.pid].append(_socket(conn))
        self._note_unattributable(processes)
        return by_pid, True, None

    def _kernel_sockets(self, recognised: set[int]) -> tuple[dict[int, list[Socket]], dict[Pair, RttPair]]:
        """Linux: one netlink dump of every TCP socket with its inode and RTTs; owners from the
        descriptors of the recognised processes only, and of every process (as ``ss -p`` reads them)
        only when a socket to a catalogued relay is held by none of those. psutil reads every
        process's descriptors each time, which cost more than the rest of the probe (issue 13)."""
        table = self.context.kernel.tcp_sockets()  # the collection's one dump, shared with sessions
        proc = self.context.proc_root
        holders, _ = socket_holders(proc, sorted(recognised))
        if any(sock.inode not in holders and sock.remote_port and self._relay(sock.remote_ip) for sock in table):
            others, _ = socket_holders(proc, [pid for pid in process_ids(proc) if pid not in recognised])
            for inode, pids in others.items():
                holders.setdefault(inode, []).extend(pids)
        by_pid: dict[int, list[Socket]] = defaultdict(list)
        for sock in table:
            for pid in holders.get(sock.inode, []):
                connected = sock.remote_port != 0  # a listening or unconnected socket has no peer
                by_pid[pid].append(Socket(sock.local_ip, sock.local_port, sock.remote_ip if connected else None,
                                          sock.remote_port if connected else None, sock.state))
        return by_pid, {sock.pair: (sock.rtt_ms, sock.min_rtt_ms) for sock in table}

    def _sockets_one_by_one(self, processes: list[psutil.Process]) -> dict[int, list[Socket]]:
        by_pid: dict[int, list[Socket]] = {}
        for process in processes:
            try:
                by_pid[process.pid] = [_socket(c) for c in process.net_connections(kind="tcp")]
            except (psutil.AccessDenied, psutil.NoSuchProcess) as denied:
                name = process.info["name"]
                self.problem(f"cannot read the sockets of {name} (pid {process.pid}): {type(denied).__name__}")
        return by_pid

    def _note_unattributable(self, processes: list[psutil.Process]) -> None:
        """Say so when sockets may be missing: without root, Linux ties no socket to another user's process."""
        if self.context.platform != "linux" or os.geteuid() == 0:
            return
        for process in processes:
            try:
                foreign = process.uids().real != os.getuid()
            except psutil.Error:
                foreign = True
            if foreign:
                name = process.info["name"]
                self.problem(f"cannot see the sockets of {name} (pid {process.pid}): another user's process "
                             "and the agent is not root")
