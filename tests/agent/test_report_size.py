"""A busy laptop's report, as the agent's default configuration makes it, fits issue 13's budget:
at most 4 KB once gzipped as the transport sends it.

Every registered probe runs (the default ``[agent].probes``) through the real runner. The laptop is
built from the tests' fixtures, each written by hand (see the README beside each): its USB bus
(tests/fixtures/sysfs/laptop) and network interfaces, VPN clients, routes and neighbours
(sysfs/laptop-net, proc/laptop-net), its time zone, locale, keyboard layouts and input methods
(tests/fixtures/host, replayed as the commands' answers), a keyboard and a mouse typing and moving
(replayed evdev nodes, tests/fixtures/evdev_devices.py). Real processes and sockets on this machine
add what a farm would show: a remote-access tool (a copy of this interpreter named ``rustdesk``)
holding a listening socket and a session, an SSH server (named ``sshd``) with an inbound session,
and eight latency anchors the collector configured (listeners on loopback).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import struct
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest
from agent_procs import NamedProcess
from evdev_devices import EV_REL, EV_SYN, KEY_A, KEYBOARD, MOUSE, REL_X, REL_Y, Machine, keys, settle

from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.input.probe import InputTimingProbe
from farmwatch.agent.probes.registry import PROBES
from farmwatch.agent.runner import Runner
from farmwatch.contract import Anchor, to_wire

FIXTURES = Path(__file__).parents[1] / "fixtures"
REPORT_GZIP_BUDGET = 4096
ANCHORS = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(sys.platform != "linux" or struct.calcsize("@l") != 8,
                       reason="replays Linux's sysfs, /proc and 64-bit evdev records"),
    pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' sockets as the agent's service does (root)"),
]


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    opened = []
    for _ in range(ANCHORS):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        opened.append(server)
    yield opened
    for server in opened:
        server.close()


def laptop(tmp_path: Path, pids: list[int]) -> tuple[Machine, Path, Path]:
    """The fixtures as one machine: (sysfs and /dev/input, a /proc, an /etc)."""
    machine = Machine(tmp_path / "machine")
    machine.plug("event0", KEYBOARD)
    machine.plug("event1", MOUSE)
    for tree in ("laptop", "laptop-net"):
        shutil.copytree(FIXTURES / "sysfs" / tree, machine.sys_root, symlinks=True, dirs_exist_ok=True)
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc" / "laptop-net", proc, symlinks=True)
    for pid in pids:  # the real processes, seen through the fixture /proc
        (proc / str(pid)).symlink_to(f"/proc/{pid}")
    etc = tmp_path / "etc"
    (etc / "default").mkdir(parents=True)
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Berlin")
    shutil.copy(FIXTURES / "host" / "default-keyboard", etc / "default" / "keyboard")
    (etc / "default" / "locale").write_text('LANG="en_US.UTF-8"\n')
    return machine, proc, etc


def replay(argv: Sequence[str]) -> str:
    """The host's commands answered from the hand-written outputs; anything else is not installed."""
    answers = {("localectl", "status"): "localectl-status.txt",
               ("dconf", "read", "/desktop/ibus/general/preload-engines"): "dconf-ibus-preload-engines.txt"}
    if tuple(argv) not in answers:
        raise FileNotFoundError(argv[0])
    return (FIXTURES / "host" / answers[tuple(argv)]).read_text()


def test_a_busy_laptops_report_from_the_default_configuration_fits_4_kb_gzipped(
        tmp_path: Path, listeners: list[socket.socket], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)  # no X session here: input comes from the kernel's devices
    tool, server = NamedProcess(tmp_path / "tool", "rustdesk"), NamedProcess(tmp_path / "ssh", "sshd")
    machine, proc, etc = laptop(tmp_path, [tool.pid, server.pid])
    anchors = [Anchor(name=f"anchor-{n}", address="127.0.0.1", port=listener.getsockname()[1],
                      latitude=50.1 + n, longitude=8.6 + n) for n, listener in enumerate(listeners)]
    context = ProbeContext(salt="company-salt", window_seconds=300.0, anchors=anchors, platform="linux",
                           proc_root=proc, sys_root=machine.sys_root, dev_root=machine.dev_root, etc_root=etc,
                           run=replay)
    runner = Runner(context)  # every registered probe: the default configuration
    try:
        start = datetime.now(timezone.utc)
        runner.start()
        typed = [7000 + 0.18 * n for n in range(40)]
        machine.write("event0", keys(typed, [KEY_A] * len(typed)))
        machine.write("event1", [event for n in range(200) for event in (
            (7000 + n * 0.008, EV_REL, REL_X, 3), (7000 + n * 0.008, EV_REL, REL_Y, -1), (7000 + n * 0.008, EV_SYN, 0, 0))])
        listening = next(p for p in runner.probes if isinstance(p, InputTimingProbe))
        settle(listening.events_seen, len(typed) + 200)
        report = runner.report("0f6f1b0e-4a57-4c3e-9d2b-5a6f7e8d9c0b", 4711, start, datetime.now(timezone.utc))
    finally:
        runner.stop()
        tool.close()
        server.close()
        machine.close()
    wire = to_wire(report)
    sent = json.dumps(wire).encode()  # as the agent spools and sends it
    assert [p.name for p in runner.probes] == list(PROBES)
    # it is the busy report it claims to be: every section filled
    assert [t["tool"] for t in wire["remote_access"]] == ["rustdesk"] and wire["remote_access"][0]["connections"]
    assert [s["kind"] for s in wire["sessions"]] == ["ssh"]
    assert len(wire["network"]["probes"]) == ANCHORS and wire["network"]["interfaces"]
    assert wire["hardware"]["usb"] and wire["host"]["input_methods"]
    assert wire["input"]["key_events"] == len(typed) and wire["input"]["mouse_events"] == 200
    assert len(gzip.compress(sent)) <= REPORT_GZIP_BUDGET, f"{len(sent)} bytes JSON, {len(gzip.compress(sent))} gzipped"
