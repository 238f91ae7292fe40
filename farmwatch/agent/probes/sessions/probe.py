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
"""

from __future__ import annotations

from farmwatch.agent.kernel.socket_owners import ProcessInfo, processes, socket_holders, user_names
from farmwatch.agent.kernel.tcpinfo import TCP_ESTABLISHED, TCP_LISTEN, RttUnavailable, TcpSocket, tcp_sockets
from farmwatch.agent.probes.base import Probe, ProbeUnavailable
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


class SessionsProbe(Probe[list[Session]]):
    """Inbound SSH, RDP and VNC sessions with peer address, user and kernel RTT."""

    name = "sessions"
    section = "sessions"

    def collect(self) -> list[Session]:
        if self.context.platform == "win32":
            from .wts import rdp_sessions

            return rdp_sessions(self.problem)
        if not self.context.platform.startswith("linux"):
            raise ProbeUnavailable(f"remote sessions are read on Linux and Windows only, not {self.context.platform}")
        try:
            sockets = tcp_sockets((1 << TCP_ESTABLISHED) | (1 << TCP_LISTEN))
        except RttUnavailable as unavailable:
            raise ProbeUnavailable(f"cannot list TCP sockets: {unavailable}") from unavailable
        table = processes(self.context.proc_root)
        servers = {pid: info for pid, info in table.items() if info.name in SERVERS}
        if not servers:
            return []
        holders, denied = socket_holders(self.context.proc_root, sorted(servers))
        ports = self._server_ports(sockets, holders, servers, set(denied))
        listening = {sock.local_port for sock in sockets if sock.state == "LISTEN"}
        names = user_names(self.context.etc_root)
        sessions = []
        for sock in sockets:
            if sock.state != "ESTABLISHED":
                continue
            kind = ports.get(sock.local_port)
            server = next((servers[pid] for pid in holders.get(sock.inode, []) if pid in servers), None)
            if kind is None and server is not None and sock.local_port in listening:
                kind = SERVERS[server.name]  # socket-activated: systemd listens, the server holds the session
            if kind is None:
                continue
            sessions.append(Session(
                kind=kind,  # type: ignore[arg-type]
                user=self._user(kind, holders.get(sock.inode, []), table, names),
                remote_ip=sock.remote_ip,
                rtt_ms=sock.rtt_ms,
                min_rtt_ms=sock.min_rtt_ms,
            ))
        return sessions

    def _server_ports(self, sockets: list[TcpSocket], holders: dict[int, list[int]],
                      servers: dict[int, ProcessInfo], denied: set[int]) -> dict[int, str]:
        """Listening port -> session kind, from the servers' own sockets or their default ports."""
        ports: dict[int, str] = {}
        for sock in sockets:
            for pid in holders.get(sock.inode, []) if sock.state == "LISTEN" else []:
                kind = SERVERS[servers[pid].name]
                ports[sock.local_port] = "rdp" if kind == "vnc" and sock.local_port == _RDP_PORT else kind
        unseen = {info.name for pid, info in servers.items() if pid in denied}
        for kind in sorted({SERVERS[name] for name in unseen} - set(ports.values())):
            who = ", ".join(sorted(name for name in unseen if SERVERS[name] == kind))
            first, last = DEFAULT_PORTS[kind][0], DEFAULT_PORTS[kind][-1]
            self.problem(f"cannot read which sockets {who} holds without root; assumed the default "
                         f"{kind} port {first}" + (f"-{last}" if last != first else ""))
            for port in DEFAULT_PORTS[kind]:
                ports.setdefault(port, kind)
        return ports

    @staticmethod
    def _user(kind: str, holders: list[int], table: dict[int, ProcessInfo], names: dict[int, str]) -> str | None:
        """Who the session belongs to, where the socket's holders tell.

        SSH: sshd itself runs as root; the session's own process (the privilege-separated child
        holding the socket, or a child of a holder) runs as the user. VNC servers run as the
        desktop's user, so the holder's owner is the user. xrdp hands sessions to xrdp-sesman,
        whose user is not read here (None).
        """
        if kind == "rdp":
            return None
        candidates = [table[pid] for pid in holders if pid in table]
        if kind == "ssh":
            candidates = [info for info in candidates + [i for i in table.values() if i.ppid in holders]
                          if info.uid != 0]
        return names.get(candidates[0].uid, str(candidates[0].uid)) if candidates else None
