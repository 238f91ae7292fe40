"""What watching the kernel's socket table through the window costs, per hour, beside not watching.

The agent's remote_access and sessions probes each have a socket watcher
(farmwatch/agent/kernel/socket_watch.py), polled every ``watch_period_seconds``: remote_access
wants the sockets a tool's processes hold, whatever the port (the kernel cannot filter on owners),
sessions every socket on the SSH/RDP/VNC ports (a bytecode filter in the kernel); each asks for
nothing while no tool (no server) runs and nothing it watches is open. The agent polls both with
one ``SocketWatch``: one process listing and at most one dump per poll. This script holds N
loopback connections (2N established sockets) in this process, with or without a process
recognised as a remote-access tool holding two of its own (and, in one case, a process named
``sshd`` listening with one session), replaces 5 connections between polls (a browser's churn: the
tool's descriptors are read again each poll), and times both watchers' polls on this thread's CPU
clock. CPU per hour = CPU per poll x 3600 / period. Most of a dump's cost is the kernel walking
its whole TCP hash table (262,144 buckets per family here), whatever the number of sockets.

Two baselines, measured in the same run:
- "separate": the same two watchers each polled by a watch of its own, one process listing and
  one dump each per poll, which is how the agent polled them before they shared one;
- not watching: the two probes' end-of-window reads alone (``collect()`` with watching off) at
  issue 13's 60 s interval.
Target: the watchers at the default period within 0.1 % of a core (3.6 CPU s per hour), a fifth of
issue 13's agent budget (average CPU <= 0.5 % of a core at a 60 s interval) -- this script's own
allocation, not the issue's.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from report import Figure, at_most, describe, publish, quick

from farmwatch.agent.kernel.socket_watch import SocketWatch, SocketWatcher
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
SSH_SERVER = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"sshd")  # what the sessions probe recognises as an SSH server
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
session = server.accept()[0]
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


def cpu_per_poll(connections: Loopback, polls: int, tool_runs: bool) -> tuple[float, float]:
    """Both watchers' CPU seconds per poll, over ``polls`` polls with churn between them, shared by
    one watch (as the agent polls them) and each on a watch of its own (separate), interleaved."""
    tools = Catalog.from_json({"tools": [{"id": "benchtool", "processes": [TOOL_NAME]}]})
    spent = {True: 0.0, False: 0.0}
    watchers = {}
    for shared in (True, False):
        sessions_probe = SessionsProbe(ProbeContext())
        sessions = sessions_probe._watcher  # the probe's own watcher, polled here by hand
        sessions.local_ports = [(port, port) for port in sessions_probe._watched_ports()]
        claims = ToolSockets(Path("/proc"), tools)
        remote: SocketWatcher[ToolOwner] = SocketWatcher(
            claims, focus=claims.focus, extra_states=1 << TCP_LISTEN,
            watch=sessions.watch if shared else SocketWatch())
        watchers[shared] = (remote, sessions)
    for _ in range(polls):
        for shared, (remote, sessions) in watchers.items():
            connections.churn(CHURN)
            began = time.thread_time()
            if shared:
                sessions.watch.poll([remote, sessions])  # what the agent's one watch thread does
            else:
                remote.poll()
                sessions.poll()
            spent[shared] += time.thread_time() - began
    for remote, _ in watchers.values():
        watched = any(s.owner.tool == "benchtool" for s in remote.take().sightings)
        assert watched == tool_runs, "the tool's connections were not watched" if tool_runs else "watched nothing?"
    return spent[True] / polls, spent[False] / polls


def cpu_per_window(rounds: int) -> float:
    """CPU seconds of the two probes' end-of-window reads, watching off (the agent without this work)."""
    context = ProbeContext(options={"remote_access": {"watch_period_seconds": 0}, "sessions": {"watch_period_seconds": 0}})
    probes: list[RemoteAccessProbe | SessionsProbe] = [RemoteAccessProbe(context), SessionsProbe(context)]
    for probe in probes:
        probe.collect()  # warm: imports, catalogue
    began = time.thread_time()
    for _ in range(rounds):
        with context.kernel.collection():  # as the runner collects them: one /proc pass, one dump
            for probe in probes:
                probe.collect()
    return (time.thread_time() - began) / rounds


def measure(count: int, polls: int, tool_runs: bool, server_runs: bool) -> tuple[float, float, float]:
    """CPU seconds per poll of both watchers (shared, separate), and per end-of-window read of both
    probes without watching, with ``count`` loopback connections and a tool (an SSH server) running or not."""
    connections = Loopback(count)
    tool = subprocess.Popen([sys.executable, "-c", TOOL, str(connections.port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True) if tool_runs else None
    server = subprocess.Popen([sys.executable, "-c", SSH_SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) if server_runs else None
    try:
        tool_side = []
        if tool is not None:
            assert tool.stdout is not None and tool.stdout.readline().strip() == "ready"
            tool_side = [connections.server.accept()[0] for _ in range(2)]  # not churned
        if server is not None:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        shared, separate = cpu_per_poll(connections, polls, tool_runs)
        per_window = cpu_per_window(5 if quick() else 20)
        for sock in tool_side:
            sock.close()
    finally:
        for child in (tool, server):
            if child is not None:
                child.communicate("")
        connections.close()
    return shared, separate, per_window


def main() -> int:
    sizes = (50,) if quick() else (100, 1000)
    polls = 20 if quick() else 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * max(sizes) + 256)), hard))
    figures = []
    cases = [(size, True, False) for size in sizes] + [(sizes[-1], True, True), (sizes[-1], False, False)]
    for count, tool_runs, server_runs in cases:
        shared, separate, per_window = measure(count, polls, tool_runs, server_runs)
        baseline = per_window * 3600 / INTERVAL_SECONDS
        sockets = 2 * count + (4 if tool_runs else 0) + (2 if server_runs else 0)
        who = ("a tool and an SSH server running" if server_runs else "a tool running" if tool_runs
               else "no tool or server running")
        print(f"{sockets} established sockets, {who}: {shared * 1e3:.3f} ms CPU per poll of both watchers "
              f"sharing one watch, {separate * 1e3:.3f} ms each on its own, "
              f"{per_window * 1e3:.1f} ms per end-of-window read of both probes")
        for period in PERIODS if tool_runs and not server_runs else (DEFAULT_PERIOD,):
            name = f"socket watch, {who}, {sockets} sockets, every {period:g} s"
            figures.append(Figure(
                name, shared * 3600 / period, "CPU s/hour", baseline=baseline,
                baseline_is="no watching: the probes' end-of-window reads, every 60 s",
                target=at_most(3.6) if period == DEFAULT_PERIOD else None))
            if period == DEFAULT_PERIOD:
                figures.append(Figure(
                    f"{name}, one watch", shared * 3600 / period, "CPU s/hour", baseline=separate * 3600 / period,
                    baseline_is="the two watchers each polled on its own (as before they shared one)"))
    publish(figures)
    print(f"load average {os.getloadavg()[0]:.2f} (2 cores shared with other work)")
    return 0


if __name__ == "__main__":
    describe(__doc__)
    raise SystemExit(main())
