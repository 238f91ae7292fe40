"""Remote-access software that is running, with its listening ports and live TCP sessions.

Reads the process table and the TCP socket table (psutil) and matches each process NAME — never
its command line — against ``agent/data/rmm_catalog.json`` (LOLRMM plus vendor-documented
Linux/macOS names), case-insensitively and without ``.exe``. Security cares because a laptop farm
needs remote control (MITRE ATT&CK T1219): an unapproved tool holding an inbound or relayed
session is the strongest single host signal. A connection is ``inbound`` when its local port is one
the tool listens on, else ``outbound`` (a relay or the vendor's rendezvous service).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from datetime import datetime, timezone
from functools import lru_cache
from importlib.resources import files
from typing import Any, NamedTuple

import psutil

from farmwatch.agent.kernel.tcpinfo import Pair, RttPair, RttUnavailable, normalize_ip, tcp_rtts
from farmwatch.agent.probes.base import Probe
from farmwatch.contract import Connection, RemoteAccessTool

CATALOG_PATH = files("farmwatch.agent") / "data" / "rmm_catalog.json"


@lru_cache(maxsize=1)
def catalog() -> dict[str, str]:
    """Process name (lower case, no ``.exe``) → catalogue tool id."""
    data = json.loads(CATALOG_PATH.read_text("utf-8"))
    return {process: tool["id"] for tool in data["tools"] for process in tool.get("processes", [])}


def tool_for(process_name: str) -> str | None:
    """The catalogue id of a process name, or None: case-insensitive, ``.exe`` ignored."""
    key = process_name.strip().lower()
    return catalog().get(key[:-4] if key.endswith(".exe") else key)


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


def connections_of(sockets: list[Socket], rtts: dict[Pair, RttPair]) -> tuple[list[int], list[Connection]]:
    """A process's listening ports and its connections with a peer, each with a direction."""
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
        ))
    return listening, connections


class RemoteAccessProbe(Probe[list[RemoteAccessTool]]):
    """Catalogued remote-access tools that are running, with their TCP sessions."""

    name = "remote_access"
    section = "remote_access"

    def collect(self) -> list[RemoteAccessTool]:
        matches = []
        for process in psutil.process_iter(["name", "create_time"]):
            name = process.info["name"]
            tool = tool_for(name) if name else None
            if tool:
                matches.append((tool, process))
        if not matches:
            return []
        by_pid = self._tcp_sockets([p for _, p in matches])
        pairs = [(s.local_ip, s.local_port, s.remote_ip, s.remote_port)
                 for socks in by_pid.values() for s in socks if s.remote_ip is not None and s.remote_port is not None]
        try:
            rtts = tcp_rtts(pairs)
        except RttUnavailable as unavailable:
            self.problem(str(unavailable))
            rtts = {}
        found = []
        for tool, process in matches:
            listening, connections = connections_of(by_pid.get(process.pid, []), rtts)
            created = process.info["create_time"]
            found.append(RemoteAccessTool(
                tool=tool,
                process=process.info["name"],
                pid=process.pid,
                started_at=datetime.fromtimestamp(created, timezone.utc) if created else None,
                listening=listening,
                connections=connections,
            ))
        return found

    def _tcp_sockets(self, processes: list[psutil.Process]) -> dict[int, list[Socket]]:
        """TCP sockets of ``processes``: one system-wide read, or per process where that is denied."""
        pids = {p.pid for p in processes}
        by_pid: dict[int, list[Socket]] = defaultdict(list)
        try:
            table = psutil.net_connections(kind="tcp")
        except psutil.AccessDenied:
            # macOS without root: the system-wide table needs privileges, a process's own may not.
            return self._sockets_one_by_one(processes)
        for conn in table:
            if conn.pid in pids:
                by_pid[conn.pid].append(_socket(conn))
        self._note_unattributable(processes)
        return by_pid

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
