"""The socket watcher against the real kernel: loopback connections opened and closed during a window.

No mocks: the kernel's own NETLINK_SOCK_DIAG answers (filtered by its own bytecode interpreter),
this process's real ``/proc`` entries as the owners. Only the clock is a counter, so first/last
seen are exact and no test depends on how fast this box is.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from farmwatch.agent.kernel.process_names import ProcessNames
from farmwatch.agent.kernel.socket_watch import SocketWatch, SocketWatcher, netlink_dump
from farmwatch.agent.kernel.tcpinfo import TCP_ESTABLISHED, TCP_LISTEN, TcpSocket, tcp_sockets
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.catalog import Catalog
from farmwatch.agent.probes.remote_access.probe import RemoteAccessProbe
from farmwatch.agent.probes.remote_access.watch import CLOSED, ToolOwner, ToolSockets, add_sightings
from farmwatch.agent.probes.sessions.probe import SessionsProbe
from farmwatch.contract import Connection, RemoteAccessTool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="NETLINK_SOCK_DIAG is Linux-only")

OUR_NAME = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
AS_A_TOOL = Catalog.from_json({"tools": [{"id": "testtool", "processes": [OUR_NAME]}]})


@contextmanager
def _server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


@contextmanager
def _session(server: socket.socket) -> Iterator[tuple[socket.socket, socket.socket]]:
    """One loopback connection with a data round trip each way (RTT samples), closed on exit."""
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    client.sendall(b"ping")
    accepted.recv(4)
    accepted.sendall(b"pong")
    client.recv(4)
    try:
        yield client, accepted
    finally:
        client.close()
        accepted.close()


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


def _ticks() -> Iterator[float]:
    return itertools.count(1000.0, 10.0)


def _claim_port(port: int) -> object:
    def claim(fresh: list[TcpSocket], table: list[TcpSocket]) -> dict[int, str]:
        return {sock.inode: f"server:{port}" for sock in fresh if sock.local_port == port}
    return claim


def test_the_kernel_filters_by_local_port() -> None:
    with _server() as a, _server() as b, _server() as c, _session(a), _session(b), _session(c):
        ports = sorted(map(_port, (a, b, c)))

        def local_ports(ranges: list[tuple[int, int]]) -> list[int]:
            return sorted(s.local_port for s in tcp_sockets(1 << TCP_ESTABLISHED, local_ports=ranges))

        assert local_ports([(ports[0], ports[0])]) == [ports[0]]
        assert local_ports([(ports[1], ports[1]), (ports[2], ports[2])]) == ports[1:]
        between = local_ports([(ports[0], ports[2])])  # other tests' sockets may fall in the range too
        assert set(ports) <= set(between) and all(ports[0] <= p <= ports[2] for p in between)
        assert set(ports) <= set(local_ports([(1, 1), (ports[0], 65535)]))
        assert local_ports([(1, 1)]) == []


def test_a_connection_opened_and_closed_inside_the_window_is_reported_closed() -> None:
    clock = _ticks()
    with _server() as server:
        port = _port(server)
        watcher: SocketWatcher[str] = SocketWatcher(_claim_port(port), clock=lambda: next(clock))  # type: ignore[arg-type]
        watcher.local_ports = [(port, port)]
        watcher.poll()  # 1000: nothing yet
        with _session(server) as (client, _):
            watcher.poll()  # 1010: first seen
            client.sendall(b"more")
            watcher.poll()  # 1020: last seen
        watcher.poll()  # 1030: gone
        window = watcher.take()  # 1040
    (seen,) = window.sightings
    assert (seen.owner, seen.open, seen.first_seen, seen.last_seen, seen.duration_seconds) == (
        f"server:{port}", False, 1010.0, 1020.0, 10.0)
    assert seen.socket.local_port == port and seen.socket.remote_ip == "127.0.0.1"
    assert seen.min_rtt_ms is not None and seen.min_rtt_ms > 0
    assert (window.polls, window.dropped, window.problems()) == (5, 0, [])
    assert watcher.take().sightings == []  # an ended connection is reported in one window only


def test_a_connection_still_open_carries_into_the_next_window_with_its_first_seen() -> None:
    clock = _ticks()
    with _server() as server:
        port = _port(server)
        watcher: SocketWatcher[str] = SocketWatcher(_claim_port(port), clock=lambda: next(clock))  # type: ignore[arg-type]
        with _session(server):
            watcher.poll()  # 1000
            (first,) = watcher.take().sightings  # 1010
            (second,) = watcher.take().sightings  # 1020
        (last,) = watcher.take().sightings  # 1030: closed
    assert (first.open, first.first_seen, first.last_seen) == (True, 1000.0, 1010.0)
    assert (second.open, second.first_seen, second.last_seen) == (True, 1000.0, 1020.0)
    assert (last.open, last.first_seen, last.last_seen) == (False, 1000.0, 1020.0)


def test_sockets_nobody_claims_are_not_kept_and_the_limit_is_said() -> None:
    with _server() as server, _session(server), _session(server), _session(server):
        port = _port(server)
        watcher: SocketWatcher[str] = SocketWatcher(_claim_port(port), limit=2)  # type: ignore[arg-type]
        window = watcher.take()
    assert len(window.sightings) == 2  # three accepted sockets claimed; their clients are nobody's
    assert window.dropped == 1
    assert window.problems() == ["socket watch: 1 connection(s) not kept, over the limit of 2 per window"]


def test_the_thread_polls_every_period_until_stopped() -> None:
    with _server() as server:
        port = _port(server)
        watcher: SocketWatcher[str] = SocketWatcher(_claim_port(port), period_seconds=0.05)  # type: ignore[arg-type]
        watcher.local_ports = [(port, port)]
        watcher.start()
        with _session(server):
            deadline = time.monotonic() + 30
            while watcher.polls < 3 and time.monotonic() < deadline:  # the start poll and two more
                time.sleep(0.05)
        while watcher.polls < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher.stop()
        polls = watcher.polls
        time.sleep(0.2)
        assert watcher.polls == polls  # stopped means stopped
    (seen,) = watcher.take().sightings
    assert not seen.open and seen.last_seen > seen.first_seen


def test_the_owner_is_the_one_found_while_the_socket_was_held() -> None:
    """A tool's connection that closes before the window's end keeps its process and tool."""
    clock = _ticks()
    claims = ToolSockets(Path("/proc"), AS_A_TOOL)
    watcher: SocketWatcher[ToolOwner] = SocketWatcher(claims, focus=claims.focus, extra_states=1 << TCP_LISTEN,
                                                      clock=lambda: next(clock))
    with _server() as server:
        port = _port(server)
        watcher.local_ports = [(port, port)]
        with _session(server):
            watcher.poll()
        window = watcher.take()
    (seen,) = window.sightings
    assert seen.owner == ToolOwner("testtool", OUR_NAME, os.getpid(), ("name",), inbound=True)
    assert not seen.open


def test_closed_connections_join_the_section_under_their_tool() -> None:
    clock = _ticks()
    claims = ToolSockets(Path("/proc"), AS_A_TOOL)
    watcher: SocketWatcher[ToolOwner] = SocketWatcher(claims, extra_states=1 << TCP_LISTEN, clock=lambda: next(clock))
    with _server() as server:
        port = _port(server)
        watcher.local_ports = [(port, port)]
        with _session(server):
            watcher.poll()  # 1000
            watcher.poll()  # 1010
        with _session(server) as (client, accepted):
            window = watcher.take()  # 1020: the first closed, the second open
            live = Connection(remote_ip="127.0.0.1", remote_port=client.getsockname()[1], local_port=port,
                              state="ESTABLISHED", direction="inbound", rtt_ms=None, min_rtt_ms=None)
    # The section as read at the window's end: our process, holding the second connection.
    read = [RemoteAccessTool(tool="testtool", process=OUR_NAME, pid=os.getpid(), started_at=None,
                             listening=[port], connections=[live], matched_by=["name"])]
    (tool,) = add_sightings(read, window.sightings, lambda ip: "relay.example" if ip == "127.0.0.1" else None)
    still, ended = tool.connections
    assert (still.state, still.duration_seconds, still.domain) == ("ESTABLISHED", 0.0, None)
    assert still.first_seen is not None and still.first_seen.timestamp() == 1020.0
    assert (ended.state, ended.direction, ended.local_port, ended.duration_seconds, ended.domain) == (
        CLOSED, "inbound", port, 10.0, "relay.example")
    assert ended.min_rtt_ms is not None and ended.min_rtt_ms > 0
    # Its process gone: the closed connection gets an entry of its own, as the watcher found it.
    (alone,) = add_sightings([], window.sightings[:1], lambda ip: None)
    assert (alone.tool, alone.process, alone.pid, alone.listening, alone.matched_by) == (
        "testtool", OUR_NAME, os.getpid(), [], ["name"])


@pytest.mark.parametrize("probe", [RemoteAccessProbe, SessionsProbe])
def test_a_bad_watch_period_is_named_and_the_default_used(probe: type[RemoteAccessProbe | SessionsProbe]) -> None:
    made = probe(ProbeContext(options={probe.name: {"watch_period_seconds": -1}}))
    made.start()
    try:
        made.problems = []
        made.collect()
        assert made._watcher.period_seconds == 5.0
    finally:
        made.stop()
    assert any(p.startswith(f"probe_options.{probe.name}.watch_period_seconds is -1") and "used 5.0" in p
               for p in made.problems), made.problems


@pytest.mark.parametrize("probe", [RemoteAccessProbe, SessionsProbe])
def test_period_zero_turns_watching_off(probe: type[RemoteAccessProbe | SessionsProbe]) -> None:
    made = probe(ProbeContext(options={probe.name: {"watch_period_seconds": 0}}))
    made.start()
    made.collect()
    assert made._watcher.polls == 0 and not made._watcher.running and not made.context.kernel.watch.running
    made.stop()


def test_keep_parses_only_the_sockets_it_accepts() -> None:
    with _server() as server, _session(server) as (client, accepted), _session(server):
        wanted = os.fstat(accepted.fileno()).st_ino
        kept = tcp_sockets(1 << TCP_ESTABLISHED, keep=lambda inode, port: inode == wanted)
        expected = [(wanted, _port(server), _port(client))]
    assert [(s.inode, s.local_port, s.remote_port) for s in kept] == expected


def test_an_empty_focus_skips_the_dump_until_something_watched_is_open() -> None:
    dumps: list[int] = []

    def counted(states: int, ports: list[tuple[int, int]], keep: object) -> list[TcpSocket]:
        dumps.append(states)
        return netlink_dump(states, ports, keep)  # type: ignore[arg-type]

    focus: set[int] = set()
    with _server() as server:
        port = _port(server)
        watcher: SocketWatcher[str] = SocketWatcher(_claim_port(port), focus=lambda running: focus,  # type: ignore[arg-type]
                                                    watch=SocketWatch(dump=counted))  # type: ignore[arg-type]
        watcher.poll()
        assert dumps == []  # nothing running worth watching: no dump
        with _session(server) as (_, accepted):
            focus.add(os.fstat(accepted.fileno()).st_ino)
            watcher.poll()
            focus.clear()  # its holder let go: the open connection is still followed until it ends
            watcher.poll()
        watcher.poll()  # sees it gone
        watcher.poll()  # nothing open, nothing in focus: no dump
    assert len(dumps) == 3
    (seen,) = watcher.take().sightings
    assert not seen.open and seen.socket.local_port == port


def test_process_names_come_and_go_with_their_processes() -> None:
    names = ProcessNames(Path("/proc"))
    assert names.current()[os.getpid()] == OUR_NAME
    child = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 30
        while child.pid not in names.current() and time.monotonic() < deadline:
            time.sleep(0.001)  # caught early, between fork and exec, it still bears our name
        time.sleep(0.5)  # the next listing, a poll later, reads it again
        assert names.current()[child.pid] == "sleep"
        assert names.current()[child.pid] == "sleep"  # settled
    finally:
        child.kill()
        child.wait()
    assert child.pid not in names.current()


def test_a_failing_claim_is_reported_and_watching_goes_on() -> None:
    calls: list[int] = []

    def claim(fresh: list[TcpSocket], table: list[TcpSocket]) -> dict[int, str]:
        calls.append(len(fresh))
        if len(calls) == 1:
            raise OSError("proc went away")
        return {sock.inode: "server" for sock in fresh}

    with _server() as server:
        port = _port(server)
        watcher: SocketWatcher[str] = SocketWatcher(claim, period_seconds=0.05)
        watcher.local_ports = [(port, port)]
        with _session(server):
            watcher.start()  # its first poll fails in the claim
            deadline = time.monotonic() + 30
            while len(calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            watcher.stop()
            window = watcher.take()
    assert window.problems()[0] == "socket watch: a poll failed: OSError: proc went away"
    assert [seen.owner for seen in window.sightings] == ["server"]


@pytest.mark.parametrize("probe", [RemoteAccessProbe, SessionsProbe])
def test_the_collectors_config_turns_watching_on_and_off_between_windows(
        probe: type[RemoteAccessProbe | SessionsProbe]) -> None:
    context = ProbeContext(options={probe.name: {"watch_period_seconds": 0}})
    made = probe(context)
    made.start()
    try:
        made.collect()
        assert not made._watcher.running
        context.options = {probe.name: {"watch_period_seconds": 2.5}}  # as a fresh config from the collector
        made.collect()
        assert made._watcher.running and made._watcher.period_seconds == 2.5
        context.options = {}
        made.collect()
        assert made._watcher.period_seconds == 5.0
    finally:
        made.stop()
    assert not made._watcher.running and not context.kernel.watch.running


def test_two_watchers_polled_together_share_one_dump_and_get_what_each_asked_for() -> None:
    tables: list[list[TcpSocket]] = []

    def counted(states: int, ports: list[tuple[int, int]], keep: object) -> list[TcpSocket]:
        tables.append(netlink_dump(states, ports, keep))  # type: ignore[arg-type]
        return tables[-1]

    watch = SocketWatch(dump=counted)  # type: ignore[arg-type]
    with _server() as a, _server() as b, _server() as c, _session(a), _session(b) as (_, b_accepted), _session(c):
        by_port: SocketWatcher[str] = SocketWatcher(_claim_port(_port(a)), watch=watch)  # type: ignore[arg-type]
        by_port.local_ports = [(_port(a), _port(a))]
        held = os.fstat(b_accepted.fileno()).st_ino  # as a tool's process would hold it
        by_focus: SocketWatcher[str] = SocketWatcher(_claim_port(_port(b)), focus=lambda running: {held},  # type: ignore[arg-type]
                                                     watch=watch)
        watch.poll([by_port, by_focus])
        port_window, focus_window = by_port.take(), by_focus.take()
        ports = _port(a), _port(b)
    assert len(tables) == 1 + 2  # one shared poll, then each take() alone
    assert {sock.local_port for sock in tables[0]} == set(ports)  # c's sockets were not parsed
    assert [seen.socket.local_port for seen in port_window.sightings] == [ports[0]]
    assert [seen.socket.inode for seen in focus_window.sightings] == [held]
    assert (port_window.polls, focus_window.polls) == (2, 2)


def test_a_failing_watcher_does_not_cost_the_other_its_poll() -> None:
    def broken(fresh: list[TcpSocket], table: list[TcpSocket]) -> dict[int, str]:
        raise OSError("proc went away")

    watch = SocketWatch()
    with _server() as server, _session(server):
        port = _port(server)
        failing: SocketWatcher[str] = SocketWatcher(broken, watch=watch)
        working: SocketWatcher[str] = SocketWatcher(_claim_port(port), watch=watch)  # type: ignore[arg-type]
        for watcher in (failing, working):
            watcher.local_ports = [(port, port)]
        watch.poll([failing, working])
        assert failing.failure == "a poll failed: OSError: proc went away"
        assert working.failure is None and len(working.take().sightings) == 1


@pytest.mark.parametrize("periods", [(0.05, 0.05), (0.05, 0.1)], ids=["same period", "one twice the other"])
def test_joined_watchers_are_polled_on_one_thread_with_one_dump_per_tick(periods: tuple[float, float]) -> None:
    watch = SocketWatch()
    with _server() as server:
        port = _port(server)
        fast: SocketWatcher[str] = SocketWatcher(_claim_port(port), period_seconds=periods[0], watch=watch)  # type: ignore[arg-type]
        slow: SocketWatcher[str] = SocketWatcher(_claim_port(port), period_seconds=periods[1], watch=watch)  # type: ignore[arg-type]
        for watcher in (fast, slow):
            watcher.local_ports = [(port, port)]
        fast.start()
        slow.start()
        assert watch.running
        deadline = time.monotonic() + 30
        while slow.polls < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        fast.stop()
        assert watch.running  # slow is still joined
        slow.stop()
        assert not watch.running
    # Each start() polls its watcher alone; every tick after that polls both (or fast alone) with one dump.
    assert watch.dumps == fast.polls + 1
    assert slow.polls >= 4 and (slow.polls == fast.polls if periods[0] == periods[1] else slow.polls < fast.polls)


def test_the_agents_probes_share_one_socket_watch() -> None:
    context = ProbeContext()
    remote, sessions = RemoteAccessProbe(context), SessionsProbe(context)
    remote.start()
    sessions.start()
    try:
        assert remote._watcher.watch is sessions._watcher.watch is context.kernel.watch
        assert remote._watcher.running and sessions._watcher.running
    finally:
        remote.stop()
        sessions.stop()
    assert not context.kernel.watch.running
