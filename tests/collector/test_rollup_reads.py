"""The reducer reads the rollup rows it merges into by their primary key, not by a scan of the table
(``rollups._read_rollups``: at 20,000 laptops a scan per 400 keys took 1.5 s, which made an
interval's reduction grow with the square of the fleet), and appends to a device's latest hour
instead of re-packing it in every batch.

A simulated fleet (farmwatch.simulator) is stored in a real collector store (SQLite file) and
reduced by the collector's reducer; the statement's plan is SQLite's own (``EXPLAIN QUERY PLAN``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import sqlalchemy as sa
from collector_helpers import report_for, wire_time
from postgres_server import new_database as new_postgres_database
from prometheus_client import CollectorRegistry

from farmwatch.collector import rollups as reducer
from farmwatch.collector.rollups import _read_rollups, catch_up
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import reduced_reports, reports, rollups, sightings
from farmwatch.detectors.frame import Frames, frames_from_columns, packed_columns, reduce_json, window_columns
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records


def test_the_rollups_a_batch_merges_into_are_read_by_primary_key_and_only_those(tmp_path: Path) -> None:
    files = write_fleet(tmp_path, seed=29, legit=6, farms=2, days=1)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    try:
        load_records(storage, records)
        last = max(datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")) for r in records)
        catch_up(storage, last + timedelta(minutes=1))
        with storage.engine.connect() as connection:
            stored = sorted((row.device_id, row.hour) for row in connection.execute(sa.select(rollups.c.device_id, rollups.c.hour)))
            device = stored[0][0]
            hours = [hour for d, hour in stored if d == device]
            assert len(hours) >= 3
            # Its first and last hours, another device's first hour, and a key with no rollup: the
            # hours in between fall in the range asked for and must not come back.
            other = next(key for key in stored if key[0] != device)
            wanted = [(device, hours[0]), (device, hours[-1]), other, ("no-such-device", hours[0])]
            statements: list[tuple[str, Any]] = []

            def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
                statements.append((statement, parameters))

            sa.event.listen(storage.engine, "before_cursor_execute", seen)
            try:
                found = _read_rollups(connection, sorted(wanted))
            finally:
                sa.event.remove(storage.engine, "before_cursor_execute", seen)
            assert sorted(found) == sorted(wanted[:3])
            assert all(found[key].windows for key in found)
            [(statement, parameters)] = [s for s in statements if "FROM rollups" in s[0]]
            plan = " ".join(row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
        assert "SCAN rollups" not in plan and "SEARCH rollups USING INDEX" in plan, plan
    finally:
        storage.close()


def _stored(storage: Storage) -> dict[tuple[str, int], Any]:
    with storage.engine.connect() as connection:
        return {(row.device_id, row.hour): row for row in connection.execute(
            sa.select(rollups.c.device_id, rollups.c.hour, rollups.c.layout, rollups.c.reports, rollups.c.windows))}


def _report_ids(row: Any) -> list[int]:
    stored = orjson.loads(row.windows)
    return list(stored["report_id"]) if row.layout == reducer.PACKED else [window[1] for window in stored]


def test_a_batch_appends_to_a_device_s_latest_hour_and_packs_it_once_a_later_hour_comes(tmp_path: Path) -> None:
    """The hour a device is still reporting in is appended to, batch by batch, its earlier windows'
    text left as it was (re-packing it in every batch cost each report a pack and an unpack: issue
    13); the first batch that files a later hour of the device packs it, though that batch has no
    window for it; a device back after more than ``PACK_REACH_HOURS`` leaves its row as it was.
    Whatever the layout, the frames read are those of the windows packed at once."""
    start = datetime(2026, 10, 2, 10, 0, tzinfo=timezone.utc)
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    seqs: dict[str, int] = {}

    def arrive(device: str, minutes: int) -> None:
        received = start + timedelta(minutes=minutes)
        seqs[device] = seqs.get(device, 0) + 1
        report = report_for(device, seqs[device], window_start=wire_time(received - timedelta(minutes=5)),
                            window_end=wire_time(received))
        load_records(storage, [{"received_at": wire_time(received), "report": report}])
        catch_up(storage, received + timedelta(minutes=1))

    def frames(device: str, since: datetime) -> Frames:
        return frames_from_columns(reducer.windows(storage, [device], since))

    def packed_at_once(device: str, since: datetime) -> Frames:
        with storage.engine.connect() as connection:
            records = connection.execute(sa.select(reports.c.record).where(
                reports.c.device_id == device, reports.c.received_at >= since).order_by(reports.c.id)).scalars()
            return frames_from_columns([packed_columns(window_columns([list(reduce_json(text)) for text in records]))])

    hour = reducer.hour_of(start)
    try:
        arrive("laptop-a", 5)
        arrive("laptop-a", 10)
        first = _stored(storage)[("laptop-a", hour)]
        assert first.layout == reducer.LAYOUT and _report_ids(first) == [1, 2]
        arrive("laptop-b", 15)
        arrive("laptop-a", 20)
        second = _stored(storage)[("laptop-a", hour)]
        assert second.layout == reducer.LAYOUT and second.reports == 3 and _report_ids(second) == [1, 2, 4]
        assert second.windows.startswith(first.windows[:-1])  # appended to, not rewritten
        _assert_frames_equal(frames("laptop-a", start), packed_at_once("laptop-a", start))
        cut = start + timedelta(minutes=7)  # the lookback starting inside the hour
        _assert_frames_equal(frames("laptop-a", cut), packed_at_once("laptop-a", cut))

        arrive("laptop-a", 65)
        stored = _stored(storage)
        assert stored[("laptop-a", hour)].layout == reducer.PACKED and _report_ids(stored[("laptop-a", hour)]) == [1, 2, 4]
        assert stored[("laptop-a", hour + 1)].layout == reducer.LAYOUT
        assert stored[("laptop-b", hour)].layout == reducer.LAYOUT  # its device has no later hour yet
        _assert_frames_equal(frames("laptop-a", start), packed_at_once("laptop-a", start))

        arrive("laptop-b", 60 * (reducer.PACK_REACH_HOURS + 1) + 15)
        stored = _stored(storage)
        assert stored[("laptop-b", hour)].layout == reducer.LAYOUT  # beyond reach: left, and still read whole
        _assert_frames_equal(frames("laptop-b", start), packed_at_once("laptop-b", start))
    finally:
        storage.close()


def _assert_frames_equal(read: Frames, expected: Frames) -> None:
    assert len(read.reports) == len(expected.reports) > 0
    for part in ("reports", "tools", "sessions", "probes", "usb", "displays"):
        pd.testing.assert_frame_equal(getattr(read, part), getattr(expected, part), check_exact=True, obj=part)


def test_the_background_reducer_moves_the_floor_at_most_once_per_floor_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding how far the floor may move scans every report above it; a reducer keeping up with
    ingest in small batches paid that scan per batch (issue 13). Every report is still filed."""
    start = datetime(2026, 10, 2, 10, 0, tzinfo=timezone.utc)
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    scans: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "max(reports.id)" in statement and "reports.received_at <" in statement:  # rollups._settled
            scans.append(statement)

    def arrive(first: int) -> None:
        load_records(storage, [{"received_at": wire_time(start + timedelta(seconds=n)),
                                "report": report_for(f"laptop-{n % 50}", n // 50 + 1)} for n in range(first, first + 1200)])

    worker = reducer.Reducer(storage, lambda: start + timedelta(hours=1), CollectorRegistry(), lookback_hours=72)
    sa.event.listen(storage.engine, "before_cursor_execute", seen)
    try:
        arrive(0)
        worker.step()  # three batches (500, 500, 200) and a last look
        assert len(scans) == 1
        monkeypatch.setattr(reducer, "FLOOR_CHECK_SECONDS", 0.0)
        arrive(1200)
        worker.step()
        assert len(scans) == 1 + 4
        with storage.engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.sum(rollups.c.reports))).scalar() == 2400
    finally:
        sa.event.remove(storage.engine, "before_cursor_execute", seen)
        storage.close()


def test_between_floor_checks_the_background_reducer_looks_above_the_highest_reduced_report_and_a_late_one_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor lags ``SETTLE_SECONDS`` behind ingest, so a batch that looked for pending reports
    from the floor walked every report reduced since (issue 13); between floor checks the reducer
    looks above the highest reduced report (whichever replica reduced it). A report that becomes
    visible below it (PostgreSQL gives ids before commit) is filed at the next floor check, once."""
    start = datetime(2026, 10, 2, 10, 0, tzinfo=timezone.utc)
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    load_records(storage, [{"received_at": wire_time(start + timedelta(seconds=n / 20)),
                            "report": report_for(f"laptop-{n % 50}", n // 50 + 1)} for n in range(1200)])
    # A minute after the last: none settled, so the floor stays below the late report (module docstring).
    now = start + timedelta(minutes=2)
    worker = reducer.Reducer(storage, lambda: now, CollectorRegistry(), lookback_hours=72)
    filed = sa.select(sa.func.coalesce(sa.func.sum(rollups.c.reports), 0))
    try:
        with storage._writer.begin() as tx:  # report 100 is not visible yet: its transaction has not committed
            late = tx.execute(sa.select(reports).where(reports.c.id == 100)).one()._asdict()
            tx.execute(reports.delete().where(reports.c.id == 100))
        worker.step()
        with storage._writer.begin() as tx:  # now it is
            tx.execute(reports.insert().values(late))
        worker.step()
        with storage.engine.connect() as connection:
            assert connection.execute(filed).scalar() == 1199
        monkeypatch.setattr(reducer, "FLOOR_CHECK_SECONDS", 0.0)
        worker.step()
        worker.step()
        with storage.engine.connect() as connection:
            assert connection.execute(filed).scalar() == 1200
    finally:
        storage.close()


def test_on_postgresql_a_batch_writes_its_markers_and_sightings_in_one_statement_each(
        postgres: str, tmp_path: Path) -> None:
    """Row by row (executemany) each marker and sighting cost PostgreSQL a statement execution
    (issue 13); bound as arrays, a batch writes each in one, and files what SQLite's reducer files."""
    start = datetime(2026, 10, 2, 10, 0, tzinfo=timezone.utc)
    records = [{"received_at": wire_time(start + timedelta(seconds=n / 10)), "report": report_for(f"laptop-{n % 50}", n // 50 + 1)}
               for n in range(1200)]
    filed: list[set[tuple[Any, ...]]] = []
    statements: list[tuple[str, bool]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, executemany: bool) -> None:
        if statement.startswith(("INSERT INTO sightings", "INSERT INTO reduced_reports")):
            statements.append((statement.split()[2], executemany))

    for url in (new_postgres_database(postgres, "one_statement"), f"sqlite:///{tmp_path / 'collector.db'}"):
        storage = Storage.open(url)
        sa.event.listen(storage.engine, "before_cursor_execute", seen)
        try:
            load_records(storage, records)
            catch_up(storage, start + timedelta(minutes=5))  # none settled: every marker stays
            with storage.engine.connect() as connection:
                filed.append(set(connection.execute(sa.select(sightings.c.kind, sightings.c.identity, sightings.c.hour,
                                                              sightings.c.device_id)).all())
                             | set(connection.execute(sa.select(reduced_reports.c.report_id)).all()))
        finally:
            sa.event.remove(storage.engine, "before_cursor_execute", seen)
            storage.close()
        if url.startswith("postgresql"):
            assert statements == [("sightings", False), ("reduced_reports", False)] * 3  # batches of 500, 500, 200
    assert filed[0] == filed[1] and len(filed[0]) > 1200  # batches differ: SQLite's catch-up claims devices
