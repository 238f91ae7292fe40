"""What watching the kernel's socket table through the window costs, per hour, beside not watching.

The agent's remote_access and sessions probes each run a socket watcher
(farmwatch/agent/kernel/socket_watch.py) that dumps the established TCP sockets every
``watch_period_seconds``: remote_access every socket (its owners are processes, which the kernel
cannot filter on), sessions only the SSH/RDP/VNC ports (a bytecode filter in the kernel); each
skips the dump while no tool (no server) runs and nothing it watches is open. This script holds N
loopback connections (2N established sockets) in this process, with or without a process
recognised as a remote-access tool holding two of its own, replaces 5 connections between polls
(a browser's churn: the tool's descriptors are read again each poll), and times both watchers'
polls on this thread's CPU clock. CPU per hour = CPU per poll x 3600 / period. Most of a dump's
cost is the kernel walking its whole TCP hash table (262,144 buckets per family here), whatever
the number of sockets.

Baseline, measured in the same run: not watching, i.e. the two probes' end-of-window reads alone
(``collect()`` with watching off) at issue 13's 60 s interval. Target: the watchers at the default
period within 0.1 % of a core (3.6 CPU s per hour), a fifth of issue 13's agent budget (average
CPU <= 0.5 % of a core at a 60 s interval) -- this script's own allocation, not the issue's.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from report import Figure, at_most, publish, quick

from farmwatch.agent.kernel.socket_watch import SocketWatcher
from farmwatch.agent.kernel.tcpinfo import TCP_LISTEN
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.catalog import Catalog
from farmwatch.agent.probes.remote_access.probe import RemoteAccessOptions, RemoteAccessProbe
from farmwatch.agent.probes.remote_access.watch import ToolOwner, ToolSockets
from farmwatch.agent.probes.sessions.probe import SessionsProbe

TOOL_NAME = "benchtool"
CHURN = 5  # connections replaced between polls
PERIODS = (2.0, 5.0, 10.0)
DEFAULT_PERIOD = RemoteAccessOptions().watch_period_seconds
INTERVAL_SECONDS = 60.0  # issue 13's agent interval for the budget
TOOL = f"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"{TOOL_NAME}")  # PR_SET_NAME: /proc/self/comm, what the catalogue matches
held = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(2)]
print("ready", flush=True)
sys.stdin.read()
"""


class Loopback:
    """N held loopback connections on one server, replaceable a few at a time."""

    def __init__(self, count: int) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = self.server.getsockname()[1]
        self.held: list[tuple[socket.socket, socket.socket]] = []
        for _ in range(count):
            self.open()

    def open(self) -> None:
        client = socket.create_connection(("127.0.0.1", self.port))
        accepted, _ = self.server.accept()
        self.held.append((client, accepted))

    def churn(self, count: int) -> None:
        for client, accepted in self.held[:count]:
            client.close()
            accepted.close()
        del self.held[:count]
        for _ in range(count):
            self.open()

    def close(self) -> None:
        for pair in self.held:
            for sock in pair:
                sock.close()
        self.server.close()


def cpu_per_poll(connections: Loopback, polls: int, tool_runs: bool) -> float:
    """Both watchers' CPU seconds per poll, over ``polls`` polls with churn between them."""
    tools = Catalog.from_json({"tools": [{"id": "benchtool", "processes": [TOOL_NAME]}]})
    claims = ToolSockets(Path("/proc"), tools)
    remote: SocketWatcher[ToolOwner] = SocketWatcher(claims, focus=claims.focus, extra_states=1 << TCP_LISTEN)
    sessions_probe = SessionsProbe(ProbeContext())
    sessions = sessions_probe._watcher  # the probe's own watcher, polled here by hand
    sessions.local_ports = [(port, port) for port in sessions_probe._watched_ports()]
    spent = 0.0
    for _ in range(polls):
        connections.churn(CHURN)
        began = time.thread_time()
        remote.poll()
        sessions.poll()
        spent += time.thread_time() - began
    seen = remote.take()
    watched = any(s.owner.tool == "benchtool" for s in seen.sightings)
    assert watched == tool_runs, "the tool's connections were not watched" if tool_runs else "watched nothing?"
    return spent / polls


def cpu_per_window(rounds: int) -> float:
    """CPU seconds of the two probes' end-of-window reads, watching off (the agent without this work)."""
    off = {"remote_access": {"watch_period_seconds": 0}, "sessions": {"watch_period_seconds": 0}}
    probes: list[RemoteAccessProbe | SessionsProbe] = [RemoteAccessProbe(ProbeContext(options=off)),
                                                       SessionsProbe(ProbeContext(options=off))]
    for probe in probes:
        probe.collect()  # warm: imports, catalogue
    began = time.thread_time()
    for _ in range(rounds):
        for probe in probes:
            probe.collect()
    return (time.thread_time() - began) / rounds


def measure(count: int, polls: int, tool_runs: bool) -> tuple[float, float]:
    """CPU seconds per poll of both watchers, and per end-of-window read of both probes without
    watching, with ``count`` loopback connections and a tool running or not."""
    connections = Loopback(count)
    tool = subprocess.Popen([sys.executable, "-c", TOOL, str(connections.port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True) if tool_runs else None
    try:
        tool_side = []
        if tool is not None:
            assert tool.stdout is not None and tool.stdout.readline().strip() == "ready"
            tool_side = [connections.server.accept()[0] for _ in range(2)]  # not churned
        per_poll = cpu_per_poll(connections, polls, tool_runs)
        per_window = cpu_per_window(5 if quick() else 20)
        for sock in tool_side:
            sock.close()
    finally:
        if tool is not None:
            tool.communicate("")
        connections.close()
    return per_poll, per_window


def main() -> int:
    sizes = (50,) if quick() else (100, 1000)
    polls = 20 if quick() else 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(sizes) + 256)), hard))
    figures = []
    for count, tool_runs in [(size, True) for size in sizes] + [(sizes[-1], False)]:
        per_poll, per_window = measure(count, polls, tool_runs)
        baseline = per_window * 3600 / INTERVAL_SECONDS
        sockets = 2 * count + (4 if tool_runs else 0)
        who = "a tool running" if tool_runs else "no tool or server running"
        print(f"{sockets} established sockets, {who}: {per_poll * 1e3:.3f} ms CPU per poll (both watchers), "
              f"{per_window * 1e3:.1f} ms per end-of-window read of both probes")
        for period in PERIODS if tool_runs else (DEFAULT_PERIOD,):
            figures.append(Figure(
                f"socket watch, {who}, {sockets} sockets, every {period:g} s", per_poll * 3600 / period,
                "CPU s/hour", baseline=baseline, baseline_is="no watching: the probes' end-of-window reads, every 60 s",
                target=at_most(3.6) if period == DEFAULT_PERIOD else None))
    publish(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
