"""Scoring from rollups gives the verdicts of a full re-read, and every report is reduced exactly once.

Simulated fleets (farmwatch.simulator, several seeds and variants) are stored in a real collector
store (SQLite file; PostgreSQL from tests/fixtures/postgres_server.py), reduced by the reducer, and
scored two ways: :func:`farmwatch.detectors.pipeline.score` over ``Storage.records`` (today's full
re-read) and :func:`farmwatch.collector.incremental.score_devices` over the rollups. The verdicts
must be equal in every field, and between them the fleets must fire every registered detector.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
import sqlalchemy as sa

from farmwatch.collector import incremental, retention, rollups
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import refresh_baselines, score_devices
from farmwatch.collector.purge import purge_device
from farmwatch.collector.retention import RetentionSettings, prune
from farmwatch.collector.rollups import changed_devices, devices_since, reduce_pending
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import reduced_reports, reports, rollup_layouts, rollup_progress, sightings
from farmwatch.collector.tables import rollups as rollups_table
from farmwatch.contract import Verdict, to_wire
from farmwatch.detectors.frame import (
    WINDOW_LAYOUT, frames_from_columns, reduce_record, window_columns,
)
from farmwatch.detectors.pipeline import score
from farmwatch.detectors.registry import REGISTRY
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records

CONFIG = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=72)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fleet(folder: Path, seed: int, **variant: Any) -> tuple[list[dict[str, Any]], Path, Path]:
    files = write_fleet(folder, seed=seed, legit=45, farms=10, days=4, **variant)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    records.sort(key=lambda record: record["received_at"])  # as they would arrive
    return records, files.roster, files.anchors


def _store(url: str, records: list[dict[str, Any]], roster: Path, anchors: Path) -> Storage:
    storage = Storage.open(url)
    load_records(storage, records)
    storage.replace_roster(load_roster(roster))
    storage.replace_anchors(load_anchors(anchors))
    return storage


def _reduce_all(storage: Storage, now: datetime, limit: int) -> int:
    batches = 0
    while reduce_pending(storage, now, limit=limit).reports:
        batches += 1
    return batches


def _full_reread(storage: Storage, now: datetime, devices: set[str] | None = None) -> dict[str, Any]:
    since = now - timedelta(hours=CONFIG.lookback_hours)
    verdicts = score(storage.records(since=since), storage.roster(), storage.anchors(), now, CONFIG.detection,
                     storage.suppressed_detectors(now))
    return {v.device_id: to_wire(v) for v in verdicts if devices is None or v.device_id in devices}


def _wire(verdicts: list[Verdict]) -> dict[str, Any]:
    return {v.device_id: to_wire(v) for v in verdicts}


def _assert_same(full: dict[str, Any], incremental: dict[str, Any]) -> None:
    assert sorted(incremental) == sorted(full)
    differing = [device for device in full if full[device] != incremental[device]]
    assert not differing, f"{len(differing)} verdicts differ, e.g. {differing[0]}:\n" \
        f"full        {full[differing[0]]}\nincremental {incremental[differing[0]]}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'collector.db'}"


def test_rollups_give_the_verdicts_of_a_full_reread_on_several_fleets(tmp_path: Path) -> None:
    fired: set[str] = set()
    for seed, variant in ((3, {}), (7, {"stealthy": True}),
                          (11, {"shared_egress": True, "tactics": ("tampering", "vps-hop", "kvm-reflashed", "in-city")})):
        records, roster, anchors = _fleet(tmp_path / f"fleet-{seed}", seed, **variant)
        storage = _store(f"sqlite:///{tmp_path / f'seed-{seed}.db'}", records, roster, anchors)
        try:
            # Seven minutes past the last receipt: the lookback starts mid-hour, so the first hour's
            # rollups hold windows received before it, which must be left out as a re-read leaves them.
            now = _time(records[-1]["received_at"]) + timedelta(minutes=7)
            assert _reduce_all(storage, now, limit=997) > 10  # many batches: rollup rows are merged into
            full = _full_reread(storage, now)
            devices = devices_since(storage, now - timedelta(hours=CONFIG.lookback_hours))
            _assert_same(full, _wire(score_devices(storage, devices, now, CONFIG).verdicts))
            assert {"farm", "clear"} <= {v["verdict"] for v in full.values()}
            fired |= {finding["detector"] for v in full.values() for finding in v["findings"]}
        finally:
            storage.close()
    assert fired == set(REGISTRY), f"no fleet fired {sorted(set(REGISTRY) - fired)}"


def test_one_new_interval_rescores_the_changed_devices_as_a_full_reread_would(tmp_path: Path) -> None:
    records, roster, anchors = _fleet(tmp_path / "fleet", 5)
    cut = _time(records[-1]["received_at"]) - timedelta(hours=2)
    before = [r for r in records if _time(r["received_at"]) < cut]
    interval = [r for r in records if cut <= _time(r["received_at"]) < cut + timedelta(minutes=5)]
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", before, roster, anchors)
    try:
        first = cut + timedelta(seconds=30)
        _reduce_all(storage, first, limit=5000)
        _, mark = changed_devices(storage, 0)
        assert mark > 0

        load_records(storage, interval)
        now = cut + timedelta(minutes=5, seconds=30)
        _reduce_all(storage, now, limit=5000)
        changed, next_mark = changed_devices(storage, mark)
        reporting = {r["report"]["device_id"] for r in interval}
        everyone = set(devices_since(storage, now - timedelta(hours=CONFIG.lookback_hours)))
        # Devices that reported, and those sharing a network with them in that hour; not the fleet.
        assert reporting <= changed < everyone and next_mark > mark
        assert changed_devices(storage, next_mark) == (set(), next_mark)

        baselines = refresh_baselines(storage, now, CONFIG)
        scored = score_devices(storage, changed, now, CONFIG, baselines)
        _assert_same(_full_reread(storage, now, changed), _wire(scored.verdicts))
        assert set(scored.network_kinds) == changed
    finally:
        storage.close()


def test_a_batch_holds_frames_of_batch_devices_at_a_time_and_judges_co_location_on_its_neighbourhood(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, roster, anchors = _fleet(tmp_path / "fleet", 11, shared_egress=True)
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", records, roster, anchors)
    try:
        now = _time(records[-1]["received_at"]) + timedelta(minutes=7)
        _reduce_all(storage, now, limit=5000)
        full = _full_reread(storage, now)
        colocated = sorted(d for d, v in full.items() if any(f["detector"] == "colocation" for f in v["findings"]))
        devices = devices_since(storage, now - timedelta(hours=CONFIG.lookback_hours))
        baselines = refresh_baselines(storage, now, CONFIG)
        held: list[int] = []  # devices of each frame built
        build = incremental.frames_from_columns

        def frames_from_columns(*args: Any) -> Any:
            frames = build(*args)
            held.append(frames.reports["device_id"].nunique())
            return frames

        monkeypatch.setattr(incremental, "frames_from_columns", frames_from_columns)
        config = dataclasses.replace(CONFIG, batch_devices=4)
        # Half of a co-location cluster (its other members are only its neighbours), then the fleet.
        for batch in (colocated[::2] + devices[:3], devices):
            assert len(rollups.neighbours(storage, batch)) > len(batch) or batch == devices
            held.clear()
            scored = score_devices(storage, batch, now, config, baselines)
            _assert_same(_full_reread(storage, now, set(batch)), _wire(scored.verdicts))
            assert held and max(held) < 2 * config.batch_devices  # no frame of the whole batch or neighbourhood
        assert len(colocated) >= 4
    finally:
        storage.close()


def _report_ids(windows: str) -> list[int]:
    """The reports a rollup row's ``windows`` text holds, stored as columns or per window (an hour
    still being filled, and earlier versions' rows)."""
    stored = orjson.loads(windows)
    return stored["report_id"] if isinstance(stored, dict) else [window[1] for window in stored]


def _reduced_once(storage: Storage) -> None:
    """Every stored report is in exactly one rollup window."""
    with storage.engine.connect() as connection:
        stored = sorted(connection.execute(sa.select(reports.c.id)).scalars())
        filed = sorted(report_id for text in connection.execute(sa.select(rollups_table.c.windows)).scalars()
                       for report_id in _report_ids(text))
    assert filed == stored


def test_a_batch_that_fails_midway_leaves_nothing_and_is_redone_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, roster, anchors = _fleet(tmp_path / "fleet", 13)
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", records[:3000], roster, anchors)
    now = _time(records[2999]["received_at"]) + timedelta(minutes=1)
    try:
        def crash(*_: object) -> int:
            raise RuntimeError("the replica died after filing its rollups")

        with monkeypatch.context() as patched:
            patched.setattr(rollups, "_advance_floor", crash)
            with pytest.raises(RuntimeError):
                reduce_pending(storage, now, limit=1000)
        with storage.engine.connect() as connection:
            for table in (rollups_table, reduced_reports, rollup_progress):
                assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0, table.name
        _reduce_all(storage, now, limit=1000)
        _reduced_once(storage)
    finally:
        storage.close()


@pytest.mark.slow
def test_replicas_on_postgresql_reduce_each_report_once_and_score_as_a_full_reread(
        postgres: str, tmp_path: Path) -> None:
    records, roster, anchors = _fleet(tmp_path / "fleet", 17)
    half = len(records) // 2
    storage = _store(postgres, records[:half], roster, anchors)
    replicas = [Storage.open(postgres) for _ in range(3)]
    now = _time(records[-1]["received_at"]) + timedelta(minutes=3)
    failures: list[BaseException] = []
    arriving = threading.Event()

    def replica(store: Storage) -> None:
        try:
            while True:
                done = reduce_pending(store, now, limit=300)
                if not done.reports:
                    if not arriving.is_set():
                        return
                    time.sleep(0.05)
        except BaseException as failure:  # noqa: BLE001 - reported by the assertion below
            failures.append(failure)

    try:
        arriving.set()
        threads = [threading.Thread(target=replica, args=(store,)) for store in replicas]
        for thread in threads:
            thread.start()
        load_records(storage, records[half:])  # reports keep arriving while the replicas reduce
        arriving.clear()
        for thread in threads:
            thread.join(timeout=600)
        assert not failures, failures
        _reduce_all(storage, now, limit=5000)
        _reduced_once(storage)
        devices = devices_since(storage, now - timedelta(hours=CONFIG.lookback_hours))
        _assert_same(_full_reread(storage, now), _wire(score_devices(replicas[0], devices, now, CONFIG).verdicts))
    finally:
        for store in replicas:
            store.close()
        storage.close()


def test_rollups_and_sightings_past_their_age_are_pruned_and_no_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, roster, anchors = _fleet(tmp_path / "fleet", 19)
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", records, roster, anchors)
    now = _time(records[-1]["received_at"])
    try:
        _reduce_all(storage, now, limit=5000)
        with storage.engine.connect() as connection:
            hours = {table.name: sorted(set(connection.execute(sa.select(table.c.hour)).scalars()))
                     for table in (rollups_table, sightings)}
        # An age that ends inside the stored hours: whole hours before the cutoff's hour go.
        cutoff = now - timedelta(days=2)
        keep_from = int(cutoff.timestamp() // 3600)
        settings = RetentionSettings(days={**RetentionSettings().days, "rollups_days": 2, "sightings_days": 2})
        monkeypatch.setattr(retention, "BATCH_ROWS", 7)  # several batches of composite keys
        deleted = prune(storage.engine, settings, now)
        with storage.engine.connect() as connection:
            for table in (rollups_table, sightings):
                left = sorted(set(connection.execute(sa.select(table.c.hour)).scalars()))
                assert left == [hour for hour in hours[table.name] if hour >= keep_from], table.name
                assert left and left != hours[table.name]
        assert deleted["rollups_days"] > 0 and deleted["sightings_days"] > 0 and deleted["reports_days"] == 0
    finally:
        storage.close()


def _rewrite_row_shaped(storage: Storage, layout: str, columns: dict[str, list[str]]) -> int:
    """Store every rollup row as an earlier version did: a JSON list of ``[received_us, report_id,
    row, tools, sessions, probes, usb, displays]`` in ``columns`` (part -> names), under ``layout``
    registered in ``rollup_layouts``; returns how many rows."""
    at = {part: [WINDOW_LAYOUT[part].index(name) for name in names] for part, names in columns.items()}
    with storage._writer.begin() as tx:
        tx.execute(rollup_layouts.insert().values(layout=layout, columns=orjson.dumps(columns).decode()))
        rows = tx.execute(sa.select(rollups_table.c.device_id, rollups_table.c.hour, rollups_table.c.layout,
                                    rollups_table.c.windows)).all()
        for row in rows:
            assert row.layout in (rollups.PACKED, rollups.LAYOUT)
            older = []
            for received, report_id, *window in rollups._stored_windows(orjson.loads(row.windows), row.layout, {}):
                parts = dict(zip(WINDOW_LAYOUT, window))
                older.append([received, report_id, [parts["reports"][i] for i in at["reports"]],
                              *([[item[i] for i in at[part]] for item in parts[part]] for part in list(WINDOW_LAYOUT)[1:])])
            tx.execute(rollups_table.update().where(rollups_table.c.device_id == row.device_id,
                                                    rollups_table.c.hour == row.hour)
                       .values(layout=layout, windows=orjson.dumps(older).decode()))
    return len(rows)


def _rewrite_as_plain_columns(storage: Storage) -> int:
    """Store every rollup row as the previous release did (layout ``columns``: window_columns of the
    row's reports, reduced again from the stored records, each column a JSON list); returns how many."""
    with storage._writer.begin() as tx:
        rows = tx.execute(sa.select(rollups_table.c.device_id, rollups_table.c.hour, rollups_table.c.layout,
                                    rollups_table.c.windows)).all()
        for row in rows:
            received, report_ids = zip(*(window[:2] for window in rollups._stored_windows(
                orjson.loads(row.windows), row.layout, {})))
            records = dict(tx.execute(sa.select(reports.c.id, reports.c.record)
                                      .where(reports.c.id.in_(report_ids))).all())
            columns = window_columns([list(reduce_record(orjson.loads(records[report_id]))) for report_id in report_ids])
            text = orjson.dumps({**columns, "received": received, "report_id": report_ids}).decode()
            tx.execute(rollups_table.update().where(rollups_table.c.device_id == row.device_id,
                                                    rollups_table.c.hour == row.hour)
                       .values(layout=rollups.COLUMNS, windows=text))
    return len(rows)


@pytest.mark.parametrize("layout", ["previous-release", "older-columns", "plain-columns"])
def test_rollups_an_earlier_version_stored_row_shaped_are_read_and_merged_into_as_columns(
        tmp_path: Path, layout: str) -> None:
    """Rows written per window (the format before columns) by an earlier release (its layout, the
    current columns) or one whose reports lacked ``seq_conflicts`` and put ``hostname`` first, or
    written as plain JSON columns (the previous release, before packing): read, they build the frames
    the packed rows built (the missing column null); a later batch merges into them and rewrites them
    packed; scoring then matches a full re-read."""
    records, roster, anchors = _fleet(tmp_path / "fleet", 23)
    cut = _time(records[-1]["received_at"]) - timedelta(minutes=35)  # mid-hour: that hour's rows get merged into
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", [r for r in records if _time(r["received_at"]) <= cut],
                     roster, anchors)
    try:
        now = cut + timedelta(minutes=1)
        _reduce_all(storage, now, limit=5000)
        since = now - timedelta(hours=CONFIG.lookback_hours) + timedelta(minutes=7)  # the first hour is cut too
        devices = devices_since(storage, since)
        current = frames_from_columns(rollups.windows(storage, devices, since))
        columns = {part: list(names) for part, names in WINDOW_LAYOUT.items()}
        if layout == "plain-columns":
            layout = rollups.COLUMNS
            rewritten = _rewrite_as_plain_columns(storage)
        else:
            if layout == "previous-release":
                layout = rollups.LAYOUT  # what an earlier release wrote: the same columns, per window
            else:
                columns["reports"] = ["hostname"] + [c for c in columns["reports"] if c not in ("hostname", "seq_conflicts")]
            rewritten = _rewrite_row_shaped(storage, layout, columns)
        read = frames_from_columns(rollups.windows(storage, devices, since))
        if layout not in (rollups.LAYOUT, rollups.COLUMNS):
            assert read.reports["seq_conflicts"].isna().all() and current.reports["seq_conflicts"].notna().any()
            read.reports["seq_conflicts"] = current.reports["seq_conflicts"]
        for part in ("reports", "tools", "sessions", "probes", "usb", "displays"):
            pd.testing.assert_frame_equal(getattr(read, part), getattr(current, part), check_exact=True, obj=part)

        load_records(storage, [r for r in records if _time(r["received_at"]) > cut])
        now = _time(records[-1]["received_at"]) + timedelta(minutes=1)
        _reduce_all(storage, now, limit=5000)
        with storage.engine.connect() as connection:
            layouts = dict(connection.execute(sa.select(rollups_table.c.layout, sa.func.count())
                                              .group_by(rollups_table.c.layout)).all())
        assert 0 < layouts[layout] < rewritten and layouts[rollups.PACKED] > 0  # merged-into rows became packed
        _reduced_once(storage)
        if layout in (rollups.LAYOUT, rollups.COLUMNS):  # nothing lost: the verdicts of a full re-read
            devices = devices_since(storage, now - timedelta(hours=CONFIG.lookback_hours))
            _assert_same(_full_reread(storage, now), _wire(score_devices(storage, devices, now, CONFIG).verdicts))
    finally:
        storage.close()


@pytest.mark.parametrize("order", ["receipt", "device"])
def test_a_first_reduction_leaves_out_reports_older_than_the_lookback(tmp_path: Path, order: str) -> None:
    """Stored in receipt order (live ingest), exactly the reports of the lookback are filed; stored
    device by device (a bulk load such as `make demo`), ids do not follow receipt, so every report of
    the lookback is still filed (with older ones between them: scoring reads from ``since`` on)."""
    records, roster, anchors = _fleet(tmp_path / "fleet", 29)
    if order == "device":
        records.sort(key=lambda record: (record["report"]["device_id"], record["received_at"]))
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", records, roster, anchors)
    now = max(_time(record["received_at"]) for record in records) + timedelta(minutes=1)
    since = now - timedelta(hours=CONFIG.lookback_hours)
    try:
        while reduce_pending(storage, now, since=since).reports:
            pass
        with storage.engine.connect() as connection:
            young = sorted(connection.execute(sa.select(reports.c.id).where(reports.c.received_at >= since)).scalars())
            filed = sorted(report_id for text in connection.execute(sa.select(rollups_table.c.windows)).scalars()
                           for report_id in _report_ids(text))
        assert len(young) < len(records)  # a day of the four is older than the lookback
        if order == "receipt":
            assert filed == young
        else:
            assert set(young) <= set(filed)
        devices = devices_since(storage, since)
        _assert_same(_full_reread(storage, now), _wire(score_devices(storage, devices, now, CONFIG).verdicts))
    finally:
        storage.close()


def test_a_reduced_window_holds_one_value_per_column_of_its_layout(tmp_path: Path) -> None:
    records, _, _ = _fleet(tmp_path / "fleet", 31)
    seen: set[str] = set()
    for record in records:
        window = reduce_record(record)
        assert len(window.row) == len(WINDOW_LAYOUT["reports"])
        for part, rows in zip(("tools", "sessions", "probes", "usb", "displays"), window[1:]):
            assert all(len(row) == len(WINDOW_LAYOUT[part]) for row in rows), part
            seen.update([part] if rows else [])
    assert seen == {"tools", "sessions", "probes", "usb", "displays"}  # every part was checked


def test_a_purge_rebuilds_the_device_s_rollups_from_the_reports_it_has_left(tmp_path: Path) -> None:
    """Derived data goes with the purged reports; the rest of the fleet's rollups stay as they were."""
    records, roster, anchors = _fleet(tmp_path / "fleet", 33)
    storage = _store(f"sqlite:///{tmp_path / 'collector.db'}", records, roster, anchors)
    now = max(_time(record["received_at"]) for record in records) + timedelta(minutes=1)
    try:
        _reduce_all(storage, now, limit=5000)

        def filed() -> dict[str, list[int]]:
            with storage.engine.connect() as connection:
                rows = connection.execute(sa.select(rollups_table.c.device_id, rollups_table.c.windows)).all()
            by_device: dict[str, list[int]] = {}
            for device, text in rows:
                by_device.setdefault(device, []).extend(_report_ids(text))
            return {device: sorted(ids) for device, ids in by_device.items()}

        def ids_of(device: str) -> list[int]:
            with storage.engine.connect() as connection:
                return sorted(connection.execute(sa.select(reports.c.id).where(reports.c.device_id == device)).scalars())

        before = filed()
        device, other = sorted(before)[:2]
        cutoff = now - timedelta(days=2)
        purge_device(storage.engine, device, cutoff, "test", now)
        after = filed()
        assert after[device] == ids_of(device) and 0 < len(after[device]) < len(before[device])
        assert {d: ids for d, ids in after.items() if d != device} == {d: ids for d, ids in before.items() if d != device}

        purge_device(storage.engine, device, None, "test", now)
        assert device not in filed() and filed()[other] == before[other]
        with storage.engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.count()).select_from(sightings)
                                      .where(sightings.c.device_id == device)).scalar() == 0
            assert connection.execute(sa.select(sa.func.count()).select_from(reduced_reports)
                                      .where(reduced_reports.c.report_id.in_(before[device]))).scalar() == 0
    finally:
        storage.close()
