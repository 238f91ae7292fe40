"""One /proc pass and one TCP socket dump per collection, shared by the probes (real /proc, real kernel)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from farmwatch.agent.kernel import shared_reads
from farmwatch.agent.kernel.shared_reads import KernelReads
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.runner import Runner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's /proc and NETLINK_SOCK_DIAG")

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def test_inside_a_collection_every_caller_gets_the_same_pass_and_outside_it_a_fresh_one() -> None:
    reads = KernelReads(Path("/proc"))
    with reads.collection():
        rows, sockets = reads.processes(), reads.tcp_sockets()
        child = subprocess.Popen(["sleep", "30"])
        try:
            assert reads.processes() is rows and reads.tcp_sockets() is sockets
            assert child.pid not in {row.pid for row in reads.processes()}  # started after the pass
        finally:
            child.kill()
            child.wait()
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in {row.pid for row in reads.processes()}  # no collection open: read now
        assert reads.processes() is not reads.processes()
    finally:
        child.kill()
        child.wait()


def _counted(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(shared_reads, name)

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(shared_reads, name, counting)
    return calls


def test_one_report_makes_one_proc_pass_and_one_socket_dump_for_every_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    passes, dumps = _counted(monkeypatch, "process_rows"), _counted(monkeypatch, "tcp_sockets")
    options = {name: {"watch_period_seconds": 0} for name in ("remote_access", "sessions")}  # end-of-window reads only
    runner = Runner(ProbeContext(options=options), names=["remote_access", "sessions", "network"])
    report = runner.report("device", 1, T0, T0 + timedelta(minutes=1))
    assert not [error for error in report.errors if error.probe in ("remote_access", "sessions")], report.errors
    assert (len(passes), len(dumps)) == (1, 1)  # each of the three probes read /proc; two dumped sockets
    runner.report("device", 2, T0, T0 + timedelta(minutes=2))
    assert (len(passes), len(dumps)) == (2, 2)  # the next report reads afresh
