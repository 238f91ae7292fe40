"""The one-pass /proc process table gives what psutil gives for the same processes (Linux, real /proc)."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest
from agent_procs import NamedProcess

from farmwatch.agent.kernel.process_table import process_rows

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's /proc")


def test_names_executables_and_start_times_are_psutils() -> None:
    compared = 0
    for row in process_rows(Path("/proc")):
        try:
            process = psutil.Process(row.pid)
            with process.oneshot():
                name, created = process.name(), process.create_time()
                try:
                    exe = process.exe() or None
                except psutil.AccessDenied:
                    exe = None
        except psutil.NoSuchProcess:
            continue  # exited between the two reads
        assert (row.name, row.exe) == (name, exe), row.pid
        assert row.create_time == pytest.approx(created, abs=0.01)
        compared += 1
    assert compared > 1


@pytest.mark.slow
def test_a_name_longer_than_comm_is_read_whole_from_the_executable(tmp_path: Path) -> None:
    long_named = NamedProcess(tmp_path, "ScreenConnect.ClientService")  # comm keeps "ScreenConnect.C"
    try:
        rows = {row.pid: row for row in process_rows(Path("/proc"))}
        assert rows[long_named.pid].name == "ScreenConnect.ClientService"
        assert rows[long_named.pid].exe == str(tmp_path / "ScreenConnect.ClientService")
    finally:
        long_named.close()
