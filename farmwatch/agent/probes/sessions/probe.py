"""The ``sessions`` section: inbound remote sessions (SSH, RDP, VNC) with the kernel's RTT.

Linux: finds server processes by name (sshd/sshd-session, xrdp, x11vnc, wayvnc, vino-server,
TigerVNC's Xvnc/x0vncserver, krfb, gnome-remote-desktop), the ports their listening sockets hold
(``/proc/<pid>/fd`` matched to the netlink socket dump), and every established TCP connection on
those ports: one session each, with the peer address, the user (the non-root process holding the
socket, e.g. sshd's per-user child) and ``tcp_info`` RTTs. Why security cares: a farm operator
reaches the laptop through such a session, and its minimum RTT bounds how far away they sit
(light in fibre: r ms of RTT bounds the distance to r x 100 km).

Without root the agent cannot read other users' descriptors; it then assumes the servers' default
ports (SSH 22, RDP 3389, VNC 5900-5909) and says so in ``errors``. Windows: RDP sessions from
the WTS API (:mod:`farmwatch.agent.probes.sessions.wts`), without RTT. Logged-in users and
their remote hosts are the host probe's.

Through the window (Linux), a socket watcher polls the kernel's established TCP sockets on the
servers' ports and the default ones (the kernel filters by state and port), while a server runs, every
``probe_options.sessions.watch_period_seconds`` (default 5; 0 turns it off), so a session that
began and ended between two reports is reported too: ``state`` ``CLOSED`` with ``first_seen``,
``last_seen``, ``duration_seconds`` and its least ``min_rtt_ms``, its kind and user as found when
it was first seen; sessions open at the window's end are ``ESTABLISHED`` with the same times.
Its polls are remote_access's (the agent's one ``SocketWatch``: one dump per poll for both), and at
the window's end both probes read the collection's one socket dump and one pass over ``/proc``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Annotated, NamedTuple

from pydantic import Field

from farmwatch.agent.kernel.process_table import ProcessRow
from farmwatch.agent.kernel.socket_owners import real_uid, socket_holders, user_names
from farmwatch.agent.kernel.socket_watch import Sighting, SocketWatcher
from farmwatch.agent.kernel.tcpinfo import TCP_LISTEN, RttUnavailable, TcpSocket
from farmwatch.agent.probes.base import Probe, ProbeContext, ProbeOptions, ProbeUnavailable
from farmwatch.contract import Session

SERVERS: dict[str, str] = {
    "sshd": "ssh", "sshd-session": "ssh",  # OpenSSH >= 9.8 runs each session as sshd-session
    "xrdp": "rdp",
    "x11vnc": "vnc", "wayvnc": "vnc", "vino-server": "vnc", "Xvnc": "vnc", "Xtigervnc": "vnc",
    "x0vncserver": "vnc", "x0tigervncserve": "vnc", "krfb": "vnc",
    "gnome-remote-de": "vnc",  # gnome-remote-desktop-daemon (comm is cut to 15 characters)
}
"""Server process name (Linux comm) -> session kind. gnome-remote-desktop on 3389 is RDP."""

DEFAULT_PORTS: dict[str, tuple[int, ...]] = {"ssh": (22,), "rdp": (3389,), "vnc": tuple(range(5900, 5910))}
_RDP_PORT = 3389
CLOSED = "CLOSED"  # the state of a session that ended inside the window


class SessionsOptions(ProbeOptions):
    # Seconds between polls of the kernel's socket table (bench/socket_watch_cost.py: what a period
    # costs); 0 turns watching off and only the window's end is read.
    watch_period_seconds: Annotated[float, Field(ge=0, le=300, strict=True)] = 5.0


class SessionOwner(NamedTuple):
    """A watched session's kind and user, as found by the poll that first saw it."""

    kind: str
    user: str | None


class SessionsProbe(Probe[list[Session]]):
    """Inbound SSH, RDP and VNC sessions with peer address, user and kernel RTT."""

    name = "sessions"
    section = "sessions"

    def __init__(self, context: ProbeContext) -> None:
        super().__init__(context)
        self._watcher: SocketWatcher[SessionOwner] = SocketWatcher(self._claim, focus=self._focus,
                                                                   extra_states=1 << TCP_LISTEN,
                                                                   watch=context.kernel.watch,
                                                                   clock=context.clock)
        self._ruled_out: set[int] = set()  # watched sockets found to be no session
        self._watching = False
        self._started = False  # start() ran (Linux): the watcher follows the options from then on

    def start(self) -> None:
        """Watch the session ports through the window (Linux)."""
        if not self.context.platform.startswith("linux"):
            return
        self._started = True
        self._watch(self.read_options(SessionsOptions).watch_period_seconds, self._watched_ports())

    def stop(self) -> None:
        self._watch(0, ())
        self._started = False

    def _watch(self, period_seconds: float, ports: tuple[int, ...]) -> None:
        """Poll ``ports`` every ``period_seconds`` from now on (0: not at all)."""
        self._watcher.local_ports = [(port, port) for port in ports]
        self._watcher.period_seconds = period_seconds
        if period_seconds and not self._watching:
            self._watcher.start()
        elif not period_seconds and self._watching:
            self._watcher.stop()
        self._watching = bool(period_seconds)

    def _watched_ports(self, found: dict[int, str] | None = None) -> tuple[int, ...]:
        """The servers' ports (read now unless given) and every default port."""
        if found is None:
            try:
                found = self._read(self.context.kernel.tcp_sockets(), lambda _: None)[1]
            except RttUnavailable:
                found = {}
        return tuple(sorted(set(found) | {port for ports in DEFAULT_PORTS.values() for port in ports}))

    @staticmethod
    def _focus(running: Mapping[int, str]) -> set[int] | None:
        """The watcher's focus: every socket on the watched ports while an SSH/RDP/VNC server is
        among ``running`` (pid -> name); none (no dump for it) while none is."""
        return None if any(name in SERVERS for name in running.values()) else set()

    def _claim(self, fresh: list[TcpSocket], table: list[TcpSocket]) -> dict[int, SessionOwner]:
        """The watcher's claim: which new sockets on the watched ports are sessions, of what, whose."""
        wanted = {sock.inode for sock in fresh}
        if wanted <= self._ruled_out:
            return {}
        found, _ = self._read(table, lambda _: None)  # problems are said by collect, not per poll
        owners = {sock.inode: SessionOwner(session.kind, session.user)
                  for sock, session in found if sock.inode in wanted}
        self._ruled_out = wanted - set(owners)
        return owners

    def collect(self) -> list[Session]:
        if self.context.platform == "win32":
            from .wts import rdp_sessions

            return rdp_sessions(self.problem)
        if not self.context.platform.startswith("linux"):
            raise ProbeUnavailable(f"remote sessions are read on Linux and Windows only, not {self.context.platform}")
        period = self.read_options(SessionsOptions).watch_period_seconds
        watched = self._watcher.take() if self._watching else None
        try:
            sockets = self.context.kernel.tcp_sockets()  # the collection's one dump, shared with remote_access
        except RttUnavailable as unavailable:
            raise ProbeUnavailable(f"cannot list TCP sockets: {unavailable}") from unavailable
        found, ports = self._read(sockets, self.problem)
        if self._started:  # the collector's config may have changed the period; servers come and go
            self._watch(period, self._watched_ports(ports))
        if watched is None:
            return [session for _, session in found]
        for problem in watched.problems():
            self.problem(problem)
        return _with_sightings(found, watched.sightings)

    def _read(self, sockets: list[TcpSocket], problem: Callable[[str], None]
              ) -> tuple[list[tuple[TcpSocket, Session]], dict[int, str]]:
        """The established sessions among ``sockets``, each with its socket, and the servers' ports."""
        table = {row.pid: row for row in self.context.kernel.processes()}  # the collection's one /proc pass
        servers = {pid: row for pid, row in table.items() if row.comm in SERVERS}
        if not servers:
            return [], {}
        holders, denied = socket_holders(self.context.proc_root, sorted(servers))
        ports = self._server_ports(sockets, holders, servers, set(denied), problem)
        listening = {sock.local_port for sock in sockets if sock.state == "LISTEN"}
        names = user_names(self.context.etc_root)
        sessions = []
        for sock in sockets:
            if sock.state != "ESTABLISHED":
                continue
            kind = ports.get(sock.local_port)
            server = next((servers[pid] for pid in holders.get(sock.inode, []) if pid in servers), None)
            if kind is None and server is not None and sock.local_port in listening:
                kind = SERVERS[server.comm]  # socket-activated: systemd listens, the server holds the session
            if kind is None:
                continue
            sessions.append((sock, Session(
                kind=kind,  # type: ignore[arg-type]
                user=self._user(kind, holders.get(sock.inode, []), table, names),
                remote_ip=sock.remote_ip,
                rtt_ms=sock.rtt_ms,
                min_rtt_ms=sock.min_rtt_ms,
            )))
        return sessions, ports

    def _server_ports(self, sockets: list[TcpSocket], holders: dict[int, list[int]],
                      servers: dict[int, ProcessRow], denied: set[int],
                      problem: Callable[[str], None]) -> dict[int, str]:
        """Listening port -> session kind, from the servers' own sockets or their default ports."""
        ports: dict[int, str] = {}
        for sock in sockets:
            for pid in holders.get(sock.inode, []) if sock.state == "LISTEN" else []:
                kind = SERVERS[servers[pid].comm]
                ports[sock.local_port] = "rdp" if kind == "vnc" and sock.local_port == _RDP_PORT else kind
        unseen = {row.comm for pid, row in servers.items() if pid in denied}
        for kind in sorted({SERVERS[name] for name in unseen} - set(ports.values())):
            who = ", ".join(sorted(name for name in unseen if SERVERS[name] == kind))
            first, last = DEFAULT_PORTS[kind][0], DEFAULT_PORTS[kind][-1]
            problem(f"cannot read which sockets {who} holds without root; assumed the default "
                         f"{kind} port {first}" + (f"-{last}" if last != first else ""))
            for port in DEFAULT_PORTS[kind]:
                ports.setdefault(port, kind)
        return ports

    def _user(self, kind: str, holders: list[int], table: dict[int, ProcessRow], names: dict[int, str]) -> str | None:
        """Who the session belongs to, where the socket's holders tell.

        SSH: sshd itself runs as root; the session's own process (the privilege-separated child
        holding the socket, or a child of a holder) runs as the user. VNC servers run as the
        desktop's user, so the holder's owner is the user. xrdp hands sessions to xrdp-sesman,
        whose user is not read here (None).
        """
        if kind == "rdp":
            return None
        candidates = [pid for pid in holders if pid in table]
        if kind == "ssh":
            candidates += [row.pid for row in table.values() if row.ppid in holders]
        uids = [uid for pid in candidates if (uid := real_uid(self.context.proc_root, pid)) is not None]
        if kind == "ssh":
            uids = [uid for uid in uids if uid != 0]
        return names.get(uids[0], str(uids[0])) if uids else None


def _utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, timezone.utc)


def _with_sightings(found: list[tuple[TcpSocket, Session]], watched: list[Sighting[SessionOwner]]) -> list[Session]:
    """The sessions open at the window's end with the watcher's times, plus those that ended inside it."""
    seen = {(sighting.socket.inode, sighting.socket.pair): sighting for sighting in watched}
    sessions = []
    for sock, session in found:
        sighting = seen.pop((sock.inode, sock.pair), None)
        update: dict[str, object] = {"state": "ESTABLISHED"}
        if sighting is not None:
            update.update(_times(sighting))
            update["min_rtt_ms"] = min((rtt for rtt in (session.min_rtt_ms, sighting.min_rtt_ms) if rtt is not None),
                                       default=None)
        sessions.append(session.model_copy(update=update))
    for sighting in seen.values():  # ended inside the window (or between the last poll and now)
        sessions.append(Session(
            kind=sighting.owner.kind,  # type: ignore[arg-type]
            user=sighting.owner.user, remote_ip=sighting.socket.remote_ip, rtt_ms=sighting.socket.rtt_ms,
            min_rtt_ms=sighting.min_rtt_ms, state=CLOSED, **_times(sighting),  # type: ignore[arg-type]
        ))
    return sessions


def _times(sighting: Sighting[SessionOwner]) -> dict[str, object]:
    return {"first_seen": _utc(sighting.first_seen), "last_seen": _utc(sighting.last_seen),
            "duration_seconds": round(sighting.duration_seconds, 3)}
