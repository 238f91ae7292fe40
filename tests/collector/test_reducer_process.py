"""The real collector reduces stored reports into rollups in the background, each report once, also
across a restart (the reducer's progress lives in the database, not in the process), in a child
process of ``serve`` that is started again when it dies."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from collector_helpers import auth, report_for, wire_time
from collector_process import RunningCollector
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow


def _filed(db_path: Path) -> list[tuple[str, int]]:
    """(device, report id) of every window in the rollups (stored as packed columns, rollups.PACKED,
    their report ids a plain list, or while the hour is being filled as a list of windows, each
    ``[received, report id, ...]``, rollups.LAYOUT), read with the stdlib sqlite3 module."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = [(device, orjson.loads(text)) for device, text in db.execute("SELECT device_id, windows FROM rollups")]
    return sorted((device, report_id) for device, stored in rows
                  for report_id in (stored["report_id"] if isinstance(stored, dict) else [window[1] for window in stored]))


def _stored(db_path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return sorted(db.execute("SELECT device_id, id FROM reports").fetchall())


def _send(collector: RunningCollector, device: dict[str, object], seq: int) -> None:
    end = datetime.now(timezone.utc) - timedelta(minutes=5 * (4 - seq))
    report = report_for(str(device["device_id"]), seq, window_start=wire_time(end - timedelta(minutes=5)),
                        window_end=wire_time(end))
    httpx.post(f"{collector.url}/api/v1/reports", json=report, headers=auth(device["token"]),
               timeout=30).raise_for_status()


def _until_filed(collector: RunningCollector, count: int) -> list[tuple[str, int]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        filed = _filed(collector.db_path)
        if len(filed) >= count:
            return filed
        time.sleep(0.2)
    raise AssertionError(f"rollups hold {len(_filed(collector.db_path))} windows, expected {count}:\n{collector.log()}")


def test_reports_reach_the_rollups_once_also_across_a_restart(
        collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory()
    devices = [collector.enrol(hardware_id=f"hw-{n}", hostname=f"host-{n}") for n in range(2)]
    for seq in (1, 2):
        for device in devices:
            _send(collector, device, seq)
    assert _until_filed(collector, 4) == _stored(collector.db_path)

    collector.stop()
    collector.start()
    for device in devices:
        _send(collector, device, 3)
    filed = _until_filed(collector, 6)
    time.sleep(3)  # a further reducer tick must not file anything again
    assert _filed(collector.db_path) == filed == _stored(collector.db_path)
    metrics = {sample.name: sample.value for family in text_string_to_metric_families(
        httpx.get(f"{collector.url}/metrics", timeout=10).text) for sample in family.samples}
    assert metrics["farmwatch_reduced_reports_total"] == 2  # this process's share: the two sent since the restart
    assert metrics["farmwatch_reduction_failures_total"] == 0
    assert metrics["farmwatch_reduction_last_success_timestamp_seconds"] > 0


def _metrics(collector: RunningCollector) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(
        httpx.get(f"{collector.url}/metrics", timeout=10).text) for sample in family.samples}


def test_the_reducer_runs_in_a_child_process_started_again_when_killed(
        collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory()
    device = collector.enrol(hardware_id="hw-kill", hostname="host-kill")
    _send(collector, device, 1)
    assert _until_filed(collector, 1) == _stored(collector.db_path)
    first = collector.child("fw-reducer")
    first.kill()
    first.wait(timeout=10)
    _send(collector, device, 2)  # ingest does not wait for the reducer
    assert _until_filed(collector, 2) == _stored(collector.db_path)  # the new child filed it, and only it
    second = collector.child("fw-reducer")
    assert second.pid != first.pid
    metrics = _metrics(collector)
    assert metrics["farmwatch_reducer_restarts_total"] == 1
    assert metrics["farmwatch_reduction_failures_total"] == 0
    assert "exited" in collector.log() and "starting it again" in collector.log()
    collector.stop()
    second.wait(timeout=40)  # it stops with serve (psutil.TimeoutExpired otherwise)


def _yields_the_cores_to_ingest(collector: RunningCollector) -> None:
    from farmwatch.collector.reducer_process import NICENESS

    assert collector.process is not None
    serving = psutil.Process(collector.process.pid).nice()
    child = collector.child("fw-reducer")
    deadline = time.monotonic() + 30
    while child.nice() == serving and time.monotonic() < deadline:  # it lowers its priority once the store is open
        time.sleep(0.2)
    assert child.nice() == min(19, serving + NICENESS)
    assert psutil.Process(collector.process.pid).nice() == serving  # the serving process keeps its own


def test_on_sqlite_the_reducer_yields_the_cores_to_ingest(collector_factory: Callable[..., RunningCollector]) -> None:
    # It holds the one write lock every report's commit waits for only to write a batch it reduced before.
    collector = collector_factory()
    _yields_the_cores_to_ingest(collector)
    device = collector.enrol(hardware_id="hw-nice-sqlite", hostname="host-nice-sqlite")
    _send(collector, device, 1)
    assert _until_filed(collector, 1) == _stored(collector.db_path)  # and still files what is stored


@pytest.mark.root
def test_on_postgresql_the_reducer_yields_the_cores_to_ingest(
        postgres: str, collector_factory: Callable[..., RunningCollector]) -> None:
    _yields_the_cores_to_ingest(collector_factory(database=postgres))
