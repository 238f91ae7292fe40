"""Remote-access connections through the window: which watched sockets are a tool's, and how they
join the ``remote_access`` section.

:class:`ToolSockets` is the socket watcher's claim function (:mod:`farmwatch.agent.kernel.socket_watch`):
a socket is a tool's when a process recognised as that tool holds it: by its name in the catalogue
(``/proc/<pid>/comm``, read once per new pid) or recognised by the probe's last collect in any way
(path, service, signer, relay domain), among the processes the agent's
:class:`~farmwatch.agent.kernel.socket_watch.SocketWatch` lists once per poll for every watcher.
Only those few processes' descriptors are read each poll; only the sockets they hold are parsed
from the dump, and while no tool runs (or holds a socket) this watcher asks for no dump at all
(:meth:`ToolSockets.focus`). :func:`add_sightings` then
marks the section's connections with when the watcher saw them and adds those that ended inside
the window (``state`` ``CLOSED``), under their tool even when its process has exited since.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from farmwatch.agent.kernel.process_names import ProcessNames
from farmwatch.agent.kernel.socket_owners import socket_holders
from farmwatch.agent.kernel.socket_watch import Sighting
from farmwatch.agent.kernel.tcpinfo import TcpSocket
from farmwatch.agent.probes.remote_access.catalog import Catalog
from farmwatch.contract import Connection, MatchedBy, RemoteAccessTool

CLOSED = "CLOSED"  # the state of a connection that ended inside the window


class ToolOwner(NamedTuple):
    """The tool process holding a watched socket, as found by the poll that first saw it."""

    tool: str
    process: str  # process name (comm), never the command line
    pid: int
    matched_by: tuple[MatchedBy, ...]
    inbound: bool  # its local port was one the process listened on


class ToolSockets:
    """Claims the sockets that processes recognised as remote-access tools hold."""

    def __init__(self, proc_root: Path, tools: Catalog) -> None:
        self.proc_root = proc_root
        self.catalog = tools
        self._recognised: dict[int, tuple[str, str, tuple[MatchedBy, ...]]] = {}  # from the last collect
        self._candidates: dict[int, tuple[str, str, tuple[MatchedBy, ...]]] = {}  # as of the latest focus()
        self._holders: dict[int, list[int]] = {}  # socket inode -> candidate pids, as of the latest focus()
        self._scanned = False  # focus() ran in this poll

    def follow(self, recognised: dict[int, tuple[str, str, list[MatchedBy]]]) -> None:
        """Processes the probe recognised (pid -> tool, name, ways), watched as tools from now on."""
        self._recognised = {pid: (tool, name, tuple(ways)) for pid, (tool, name, ways) in recognised.items()}

    def candidates(self, running: Mapping[int, str]) -> dict[int, tuple[str, str, tuple[MatchedBy, ...]]]:
        """pid -> (tool, process name, ways) of every process in ``running`` (pid -> name) recognised as a tool."""
        found = {pid: seen for pid, seen in self._recognised.items() if pid in running}
        for pid, name in running.items():
            tool = self.catalog.by_name(name)
            if tool is not None and pid not in found:
                found[pid] = (tool, name, ("name",))
        return found

    def focus(self, running: Mapping[int, str]) -> set[int]:
        """The watcher's focus: the socket inodes the tools among ``running`` hold now (none
        running: none, no dump)."""
        self._candidates = self.candidates(running)
        self._holders = socket_holders(self.proc_root, sorted(self._candidates))[0] if self._candidates else {}
        self._scanned = True
        return set(self._holders)

    def __call__(self, fresh: list[TcpSocket], table: list[TcpSocket]) -> dict[int, ToolOwner]:
        """Owners of the new sockets, from the descriptors :meth:`focus` read in this poll."""
        if not self._scanned:  # a watcher not given focus=self.focus: list the processes here
            self.focus(ProcessNames(self.proc_root).current())
        self._scanned = False
        candidates, holders = self._candidates, self._holders
        listening: dict[int, set[int]] = {}
        for sock in table:
            if sock.state == "LISTEN":
                for holder in holders.get(sock.inode, []):
                    listening.setdefault(holder, set()).add(sock.local_port)
        owners = {}
        for sock in fresh:
            pid = next((pid for pid in holders.get(sock.inode, []) if pid in candidates), None)
            if pid is not None:
                tool, name, ways = candidates[pid]
                owners[sock.inode] = ToolOwner(tool, name, pid, ways, sock.local_port in listening.get(pid, ()))
        return owners


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, timezone.utc)


def _watched(connection: Connection, seen: Sighting[ToolOwner], closed: bool) -> Connection:
    least = min((rtt for rtt in (connection.min_rtt_ms, seen.min_rtt_ms) if rtt is not None), default=None)
    return connection.model_copy(update={
        "state": CLOSED if closed else connection.state, "min_rtt_ms": least,
        "first_seen": _utc(seen.first_seen), "last_seen": _utc(seen.last_seen),
        "duration_seconds": round(seen.duration_seconds, 3),
    })


def add_sightings(tools: list[RemoteAccessTool], watched: list[Sighting[ToolOwner]],
                  domain_of: Callable[[str], str | None]) -> list[RemoteAccessTool]:
    """``tools`` (read at the window's end) with the watcher's times on their connections, plus the
    connections that ended inside the window (with the relay domain ``domain_of`` knows for the
    peer), under a new entry where the process is gone."""
    by_pid = {tool.pid: tool for tool in tools}
    out = list(tools)
    for seen in watched:
        owner, sock = seen.owner, seen.socket
        entry = by_pid.get(owner.pid)
        if entry is None or entry.tool != owner.tool:
            entry = RemoteAccessTool(tool=owner.tool, process=owner.process, pid=owner.pid, started_at=None,
                                     listening=[], connections=[], matched_by=list(owner.matched_by))
            by_pid[owner.pid] = entry
            out.append(entry)
        key = (sock.local_port, sock.remote_ip, sock.remote_port)
        index = next((i for i, c in enumerate(entry.connections)
                      if (c.local_port, c.remote_ip, c.remote_port) == key), None)
        if index is not None:  # still there at the window's end, as read by the probe
            entry.connections[index] = _watched(entry.connections[index], seen, closed=False)
            continue
        ended = Connection(remote_ip=sock.remote_ip, remote_port=sock.remote_port, local_port=sock.local_port,
                           state=CLOSED, direction="inbound" if owner.inbound else "outbound",
                           rtt_ms=sock.rtt_ms, min_rtt_ms=seen.min_rtt_ms, domain=domain_of(sock.remote_ip))
        entry.connections.append(_watched(ended, seen, closed=True))
    return out
