"""The reducer on SQLite reduces outside the write lock, and what others write meanwhile is never lost
nor filed twice (issue 13).

:func:`farmwatch.collector.rollups.reduce_pending` reads, parses, reduces and merges a batch in a
read-only snapshot, then writes it in a short write transaction only if what it read still holds.
Each test lets a real other writer in between the two (a second reducer on its own connection, a
purge, the retention job) through a hook right after the batch was prepared, on a real SQLite file
holding a simulated fleet, and compares the result with the same reports reduced one batch after
another with nobody in between.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from farmwatch.collector import rollups
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import refresh_baselines
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.purge import purge_device
from farmwatch.collector.retention import RetentionSettings, prune
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import (
    reduced_reports, reduction_claims, refused_reports, reports, scoring_work, sightings, verdicts,
)
from farmwatch.collector.tables import rollups as rollups_table
from farmwatch.roster import load_roster
from farmwatch.simulator.cli import FleetFiles, write_fleet
from farmwatch.simulator.store import load_records


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory: pytest.TempPathFactory) -> FleetFiles:
    return write_fleet(tmp_path_factory.mktemp("fleet"), seed=41, legit=12, farms=3, days=3)


@pytest.fixture(scope="module")
def fleet(fleet_files: FleetFiles) -> list[dict[str, Any]]:
    records = [orjson.loads(line) for line in fleet_files.records.open("rb")]
    records.sort(key=lambda record: record["received_at"])  # as they would arrive
    return records


def _open(path: Path, records: list[dict[str, Any]]) -> Storage:
    storage = Storage.open(f"sqlite:///{path}")
    load_records(storage, records)
    return storage


def _reduce_all(storage: Storage, now: datetime, limit: int = rollups.BATCH) -> None:
    while rollups.reduce_pending(storage, now, limit=limit).reports:
        pass


def _filed(storage: Storage) -> dict[str, Any]:
    """Everything the reducer derived, batch numbers left out (they count transactions, not content),
    and rollups by the reports whose windows they hold, in order (an hour still being filled holds
    a block per batch that added to it, so its text depends on how the reports were batched)."""
    with storage.engine.connect() as connection:
        return {
            "rollups": sorted((row.device_id, row.hour, row.reports, row.last_window_end,
                               [window[1] for window in rollups._stored_windows(orjson.loads(row.windows), row.layout, {})])
                              for row in connection.execute(sa.select(
                rollups_table.c.device_id, rollups_table.c.hour, rollups_table.c.layout, rollups_table.c.reports,
                rollups_table.c.last_window_end, rollups_table.c.windows))),
            "sightings": sorted(tuple(row) for row in connection.execute(sa.select(
                sightings.c.kind, sightings.c.identity, sightings.c.hour, sightings.c.device_id))),
            "refused": sorted(connection.execute(sa.select(refused_reports.c.report_id)).scalars()),
        }


def _count(storage: Storage, query: Any) -> int:
    with storage.engine.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


def _once_each(storage: Storage) -> None:
    """Every stored report is filed once: as a window of one rollup, or refused."""
    stored = _count(storage, sa.select(sa.func.count()).select_from(reports))
    windows = _count(storage, sa.select(sa.func.sum(rollups_table.c.reports)))
    refused = _count(storage, sa.select(sa.func.count()).select_from(refused_reports))
    assert windows + refused == stored


@pytest.fixture
def between(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[], object]], list[bool]]]:
    """``between(step)``: run ``step`` once, after the next batch is prepared and before its write
    transaction takes the lock; returns the outcomes of every check of a prepared batch under the lock."""
    prepare, still_holds = rollups._prepare, rollups._still_holds
    checks: list[bool] = []

    def install(step: Callable[[], object]) -> list[bool]:
        pending = [step]

        def prepared(*args: Any, **kwargs: Any) -> tuple[rollups.Filing, int | None]:
            filing = prepare(*args, **kwargs)
            if pending:
                pending.pop()()
            return filing

        def checked(*args: Any, **kwargs: Any) -> bool:
            checks.append(still_holds(*args, **kwargs))
            return checks[-1]

        monkeypatch.setattr(rollups, "_prepare", prepared)
        monkeypatch.setattr(rollups, "_still_holds", checked)
        return checks

    yield install


def test_the_write_lock_is_free_while_a_batch_is_being_reduced(
        tmp_path: Path, fleet: list[dict[str, Any]], between: Callable[[Callable[[], object]], list[bool]]) -> None:
    """The point of the change: a writer that will not wait at all (as ingest's next group commit
    would, without a busy timeout) takes the write lock while the reducer works on its batch; the
    reducer then files the batch as it read it."""
    storage = _open(tmp_path / "collector.db", fleet[:600])
    now = _time(fleet[599]["received_at"]) + timedelta(minutes=1)
    taken: list[bool] = []

    def write_meanwhile() -> None:
        writer = sqlite3.connect(tmp_path / "collector.db", timeout=0, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # "database is locked" at once if anyone holds the lock
            writer.execute("COMMIT")
            taken.append(True)
        finally:
            writer.close()

    try:
        checks = between(write_meanwhile)
        done = rollups.reduce_pending(storage, now, limit=500)
        assert taken == [True] and done.reports == 500 and checks == [True]
        _reduce_all(storage, now)
        _once_each(storage)
    finally:
        storage.close()


def test_a_batch_another_reducer_filed_meanwhile_is_not_filed_again(
        tmp_path: Path, fleet: list[dict[str, Any]], between: Callable[[Callable[[], object]], list[bool]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two reducers at once, the other one (a scorer's catch-up, here done waiting for claimed
    batches at once) with nothing left but reports of devices the first one claimed: it reduces some
    of those too, unclaimed, and writes first; the first finds them filed, writes nothing, and
    reads its devices' reports again."""
    serial = _open(tmp_path / "serial.db", fleet)
    racing = _open(tmp_path / "racing.db", fleet)
    other = Storage.open(f"sqlite:///{tmp_path / 'racing.db'}", migrate="check")
    now = _time(fleet[-1]["received_at"]) + timedelta(minutes=1)
    try:
        _reduce_all(serial, now, limit=400)
        # The first reducer's batch holds reports of every device, so the other one finds none free.
        assert len({record["report"]["device_id"] for record in fleet[:2000]}) == \
            len({record["report"]["device_id"] for record in fleet})
        # The other reducer takes a smaller batch: part of what the first read is filed, and rollup
        # rows the first merged into are rewritten, by the time the first takes the lock.
        monkeypatch.setattr(rollups, "TAKE_HELD_AFTER_SECONDS", 0.0)
        checks = between(lambda: rollups.reduce_pending(other, now, limit=150, wait=True))
        first = rollups.reduce_pending(racing, now, limit=2000, wait=True)
        # The other reducer's batch written, then the first's refused, then its devices' reports read again.
        assert checks == [True, False, True]
        assert first.reports == 2000 and first.batch == 2
        _reduce_all(racing, now, limit=400)
        _once_each(racing)
        assert _filed(racing) == _filed(serial)
    finally:
        other.close()
        racing.close()
        serial.close()


def test_reports_purged_meanwhile_are_not_filed(
        tmp_path: Path, fleet: list[dict[str, Any]], between: Callable[[Callable[[], object]], list[bool]]) -> None:
    """A purge between the read and the write: the batch is read again, and nothing derived from the
    purged reports comes back (no rollup, no sighting, no marker a reused id could inherit)."""
    storage = _open(tmp_path / "collector.db", fleet)
    now = _time(fleet[-1]["received_at"]) + timedelta(minutes=1)
    device = fleet[0]["report"]["device_id"]  # it has reports in the first batch
    try:
        with storage.engine.connect() as connection:
            purged_ids = list(connection.execute(sa.select(reports.c.id).where(reports.c.device_id == device)).scalars())
        checks = between(lambda: purge_device(storage.engine, device, None, "test", now))
        _reduce_all(storage, now)
        assert False in checks  # the background batch, prepared before the catch-up wrote, was not written
        _once_each(storage)
        with storage.engine.connect() as connection:
            for table in (rollups_table, sightings):
                assert connection.execute(sa.select(sa.func.count()).select_from(table)
                                          .where(table.c.device_id == device)).scalar() == 0, table.name
            assert connection.execute(sa.select(sa.func.count()).select_from(reduced_reports)
                                      .where(reduced_reports.c.report_id.in_(purged_ids))).scalar() == 0
    finally:
        storage.close()


def test_a_rollup_row_deleted_meanwhile_is_merged_into_as_it_is_now(
        tmp_path: Path, fleet: list[dict[str, Any]], between: Callable[[Callable[[], object]], list[bool]]) -> None:
    """A late report of an old hour merges into that hour's rollup; the retention job deletes the
    row between the read and the write. Only the check of the rows read catches it (the report
    itself is untouched): written as read, the update would find no row and the report would be
    marked reduced without being in any rollup."""
    device = fleet[0]["report"]["device_id"]
    hour = rollups.hour_of(_time(fleet[0]["received_at"]))
    late = [record for record in fleet if record["report"]["device_id"] == device
            and rollups.hour_of(_time(record["received_at"])) == hour][-1]
    storage = _open(tmp_path / "collector.db", [record for record in fleet if record is not late])
    now = _time(fleet[-1]["received_at"]) + timedelta(minutes=1)
    # The first day's hours are older than a one-day age; nothing else is old enough to go.
    settings = RetentionSettings(days={**RetentionSettings().days, "rollups_days": 1})
    assert hour < rollups.hour_of(now - timedelta(days=1))
    try:
        _reduce_all(storage, now)
        load_records(storage, [late])
        checks = between(lambda: prune(storage.engine, settings, now))
        done = rollups.reduce_pending(storage, now)
        assert done.reports == 1 and checks == [False, True]
        with storage.engine.connect() as connection:
            row = connection.execute(sa.select(rollups_table.c.reports).where(
                rollups_table.c.device_id == device, rollups_table.c.hour == hour)).one()
        assert row.reports == 1  # the late report alone: what pruning first and reducing then gives
    finally:
        storage.close()


def test_reducers_racing_in_threads_while_reports_arrive_file_what_one_reducer_would(
        tmp_path: Path, fleet: list[dict[str, Any]]) -> None:
    """No hook: three reducers on their own connections (as the serving process's reducer, the
    scorer's catch-up and a second replica would be) race for real while the rest of the fleet is
    stored; what they filed equals one reducer's work, each report once."""
    half = len(fleet) // 2
    serial = _open(tmp_path / "serial.db", fleet)
    racing = _open(tmp_path / "racing.db", fleet[:half])
    replicas = [Storage.open(f"sqlite:///{tmp_path / 'racing.db'}", migrate="check") for _ in range(3)]
    now = _time(fleet[-1]["received_at"]) + timedelta(minutes=1)
    failures: list[BaseException] = []
    arriving = threading.Event()

    def reducer(store: Storage) -> None:
        try:
            while rollups.reduce_pending(store, now, limit=150, wait=True).reports or arriving.is_set():
                time.sleep(0.01)
        except BaseException as failure:  # noqa: BLE001 - reported by the assertion below
            failures.append(failure)

    try:
        _reduce_all(serial, now)
        arriving.set()
        threads = [threading.Thread(target=reducer, args=(store,)) for store in replicas]
        for thread in threads:
            thread.start()
        load_records(racing, fleet[half:])
        arriving.clear()
        for thread in threads:
            thread.join(timeout=600)
        assert not failures, failures
        _reduce_all(racing, now)
        _once_each(racing)
        assert _filed(racing) == _filed(serial)
    finally:
        for store in replicas:
            store.close()
        racing.close()
        serial.close()


def test_two_scoring_runs_starting_together_reduce_each_report_once(
        tmp_path: Path, fleet_files: FleetFiles, fleet: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two scorers on one SQLite file start their runs at the same moment (as ``serve``'s two scoring
    processes do at an interval's tick), with an interval's reports not reduced yet: each report is
    parsed and reduced by one of them only (each run claims its batches before reducing them; before,
    both prepared every batch and the one that wrote second threw its work away), each device with a
    new report gets a verdict covering it, and nothing is left to score."""
    new = 1_600  # four of the reducer's batches
    storage = _open(tmp_path / "collector.db", fleet[:-new])
    storage.replace_roster(load_roster(fleet_files.roster))
    now = _time(fleet[-1]["received_at"]) + timedelta(minutes=1)
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=72)
    replicas = [Storage.open(f"sqlite:///{tmp_path / 'collector.db'}", migrate="check") for _ in range(2)]
    try:
        _reduce_all(storage, now)
        refresh_baselines(storage, now, config)
        load_records(storage, fleet[-new:])
        with storage.engine.connect() as connection:
            new_ids = set(connection.execute(sa.select(reports.c.id).order_by(reports.c.id.desc()).limit(new)).scalars())
        reduced: Counter[str] = Counter()
        reduce_json = rollups.reduce_json

        def counted(data: bytes | str, where: str | int = "record") -> Any:
            reduced[str(where)] += 1
            return reduce_json(data, where)

        monkeypatch.setattr(rollups, "reduce_json", counted)
        start = threading.Barrier(2)
        failures: list[BaseException] = []

        def run(replica: Storage) -> None:
            scorer = Scorer(replica, config, Metrics(CollectorRegistry(), lambda: 0), lambda: now)
            try:
                start.wait()
                scorer.run(bounded=True)
            except BaseException as failure:  # noqa: BLE001 - reported by the assertion below
                failures.append(failure)

        threads = [threading.Thread(target=run, args=(replica,)) for replica in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        assert not failures, failures
        assert reduced == Counter({f"report {report_id}": 1 for report_id in new_ids})
        _once_each(storage)
        newest = {record["report"]["device_id"] for record in fleet[-new:]}
        with storage.engine.connect() as connection:
            covered = set(connection.execute(sa.select(verdicts.c.device_id).where(
                verdicts.c.through_report_id >= max(new_ids))).scalars())
            assert newest <= covered
            assert connection.execute(sa.select(sa.func.count()).select_from(scoring_work)).scalar() == 0
    finally:
        for replica in replicas:
            replica.close()
        storage.close()


def test_a_dead_reducers_claim_keeps_others_off_its_devices_until_it_lapses(
        tmp_path: Path, fleet: list[dict[str, Any]]) -> None:
    """A reducer that died holding a claim: a reducer that does not wait (the background one) leaves
    the claimed devices' reports alone until the claim lapses, then reduces them and drops the claim."""
    storage = _open(tmp_path / "collector.db", fleet[:600])
    now = _time(fleet[599]["received_at"]) + timedelta(minutes=1)
    devices = sorted({record["report"]["device_id"] for record in fleet[:600]})
    try:
        with storage._writer.begin() as tx:
            tx.execute(reduction_claims.insert(), [{"device_id": device, "holder": "dead",
                                                    "claimed_until": now + timedelta(seconds=30)} for device in devices])
        assert rollups.reduce_pending(storage, now).reports == 0
        assert _count(storage, sa.select(sa.func.count()).select_from(reduced_reports)) == 0
        _reduce_all(storage, now + timedelta(seconds=31))
        _once_each(storage)
        assert _count(storage, sa.select(sa.func.count()).select_from(reduction_claims)) == 0
    finally:
        storage.close()


def test_devices_claimed_by_another_reducer_between_looking_and_claiming_are_left_to_it(
        tmp_path: Path, fleet: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two reducers find the same pending reports at once and the other claims their devices first:
    this one looks again and reduces the reports of the devices left (before, it found nothing to
    claim and returned as if nothing were pending, so its scoring run began without reducing)."""
    storage = _open(tmp_path / "collector.db", fleet[:600])
    now = _time(fleet[599]["received_at"]) + timedelta(minutes=1)
    first = sorted({record["report"]["device_id"] for record in fleet[:50]})
    devices_of = rollups._devices_of
    pending = [True]

    def claimed_meanwhile(device_ids: Iterator[str]) -> list[str]:
        found = devices_of(device_ids)
        if pending:  # this reducer found the first 50 reports' devices free; the other one claims them now
            pending.pop()
            assert sorted(found) == first
            with storage._writer.begin() as tx:
                tx.execute(reduction_claims.insert(), [{"device_id": device, "holder": "other",
                                                        "claimed_until": now + timedelta(seconds=30)} for device in first])
        return found

    try:
        monkeypatch.setattr(rollups, "_devices_of", claimed_meanwhile)
        done = rollups.reduce_pending(storage, now, limit=50, wait=True)  # a scoring run's reducer claims
        assert not pending and done.reports > 0
        with storage.engine.connect() as connection:
            filed = set(connection.execute(sa.select(reports.c.device_id).join(
                reduced_reports, reduced_reports.c.report_id == reports.c.id)).scalars())
        assert filed and not filed & set(first)
    finally:
        storage.close()


def test_a_claimed_batch_is_found_above_the_floor_not_through_each_devices_history(
        tmp_path: Path, fleet: list[dict[str, Any]]) -> None:
    """A claimed batch's reports are looked for by the primary key above the floor, then filtered
    by device: matched through the (device_id, seq) index, SQLite read every stored report of each
    claimed device (30 days of them by default) for every batch. Asked of SQLite's own planner, on a
    store with its real indexes and a reduced history."""
    storage = _open(tmp_path / "store.db", fleet)
    _reduce_all(storage, _time(fleet[-1]["received_at"]) + timedelta(hours=1))
    devices = sorted({record["report"]["device_id"] for record in fleet})[:3]
    query = rollups._batch_query(floor=len(fleet) // 2, limit=rollups.BATCH, devices=devices)
    sql = str(query.compile(storage.engine, compile_kwargs={"literal_binds": True}))
    with storage.engine.connect() as connection:
        plan = [row[3] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    searches = [step for step in plan if step.startswith(("SEARCH reports", "SCAN reports"))]
    assert searches == ["SEARCH reports USING INTEGER PRIMARY KEY (rowid>?)"], plan


def test_the_background_reducer_claims_nothing_so_a_scoring_catch_up_never_waits_for_it(
        tmp_path: Path, fleet: list[dict[str, Any]], between: Callable[[Callable[[], object]], list[bool]]) -> None:
    """The background reducer (``wait`` False) prepares a batch without claiming its devices: a scoring
    run's catch-up that starts meanwhile finds nothing held, reduces those reports itself at once
    (before, it polled for up to TAKE_HELD_AFTER_SECONDS behind the niced reducer's claim), and the
    background batch, no longer holding under the lock, is not written: each report filed once."""
    storage = _open(tmp_path / "collector.db", fleet[:600])
    scoring = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}", migrate="check")
    now = _time(fleet[599]["received_at"]) + timedelta(minutes=1)
    held_meanwhile: list[int] = []

    def scoring_catch_up() -> None:
        held_meanwhile.append(_count(scoring, sa.select(sa.func.count()).select_from(reduction_claims)))
        assert rollups.catch_up(scoring, now) > 0

    try:
        checks = between(scoring_catch_up)
        rollups.reduce_pending(storage, now)
        assert held_meanwhile == [0]
        assert False in checks  # the background batch, prepared before the catch-up wrote, was not written
        _reduce_all(storage, now)
        _once_each(storage)
    finally:
        scoring.close()
        storage.close()
