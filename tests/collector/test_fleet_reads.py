"""What a scoring run reads about the whole fleet is read once per run, and still gives every batch
the answer a fresh read would (:class:`farmwatch.collector.incremental.FleetReads`,
:class:`farmwatch.collector.rollups.FleetLastWindowEnd`).

A simulated fleet (farmwatch.simulator) is stored in a real collector store (SQLite file) and
reduced by the collector's reducer in steps, as reports arrive during a run.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector import incremental
from farmwatch.collector.incremental import Baselines, FleetReads, load_baselines, refresh_baselines, score_devices
from farmwatch.collector.rollups import FleetLastWindowEnd, catch_up, devices_since, last_window_end
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import rollups
from farmwatch.contract import to_wire
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records

CONFIG = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=48)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fleet(folder: Path) -> tuple[list[dict[str, Any]], Storage]:
    files = write_fleet(folder, seed=23, legit=10, farms=3, days=2, shared_egress=True)
    records = sorted((orjson.loads(line) for line in files.records.open("rb")), key=lambda r: r["received_at"])
    storage = Storage.open(f"sqlite:///{folder / 'collector.db'}")
    storage.replace_roster(load_roster(files.roster))
    storage.replace_anchors(load_anchors(files.anchors))
    return records, storage


def test_the_fleet_s_newest_window_end_follows_each_reduction_as_a_full_read_does(tmp_path: Path) -> None:
    records, storage = _fleet(tmp_path)
    try:
        end = _time(records[-1]["received_at"])
        now = end + timedelta(minutes=1)
        since = now - timedelta(hours=CONFIG.lookback_hours)
        newest = FleetLastWindowEnd(storage, since)
        assert newest() is None  # nothing reduced yet
        answers = []
        cuts = [_time(records[0]["received_at"]), end - timedelta(hours=6), end - timedelta(hours=1),
                end + timedelta(seconds=1)]
        for start, cut in zip(cuts, cuts[1:]):  # the reports arriving in steps, reduced after each
            load_records(storage, [r for r in records if start <= _time(r["received_at"]) < cut])
            catch_up(storage, now)
            answers.append(newest())
            assert answers[-1] == last_window_end(storage, since)
        assert answers[0] < answers[1] < answers[2]  # it grew with every step, as the fleet reported

        # Later calls read only rollups written by later reduction batches: a rollup changed behind
        # the reducer's back (same batch number) is not read again.
        with storage._writer.begin() as tx:
            tx.execute(rollups.update().values(last_window_end=end + timedelta(days=365)))
        assert newest() == answers[-1]
        assert FleetLastWindowEnd(storage, since)() == end + timedelta(days=365)  # a new run reads them all
    finally:
        storage.close()


def test_a_batch_scored_with_the_run_s_fleet_reads_gets_a_fresh_read_s_verdicts(tmp_path: Path) -> None:
    records, storage = _fleet(tmp_path)
    try:
        load_records(storage, records)
        now = _time(records[-1]["received_at"]) + timedelta(minutes=1)
        since = now - timedelta(hours=CONFIG.lookback_hours)
        catch_up(storage, now)
        baselines = refresh_baselines(storage, now, CONFIG)
        devices = devices_since(storage, since)
        reads = FleetReads.read(storage, since)
        for batch in (devices[:3], devices[3:8], devices[8:]):
            alone = score_devices(storage, batch, now, CONFIG, baselines)
            shared = score_devices(storage, batch, now, CONFIG, baselines, reads)
            assert [to_wire(v) for v in shared.verdicts] == [to_wire(v) for v in alone.verdicts]
            assert shared.network_kinds == alone.network_kinds
            assert {v.employee_id for v in shared.verdicts} - {None}  # the roster reached the verdicts
    finally:
        storage.close()


def test_a_batch_takes_only_its_own_devices_roster_entries_in_the_roster_s_order(tmp_path: Path) -> None:
    _, storage = _fleet(tmp_path)
    try:
        roster = storage.roster()
        reads = FleetReads(roster, lambda: None)
        wanted = {roster[5].device_id, roster[1].device_id, "not-in-the-roster", roster[9].device_id}
        assert reads.roster_of(wanted) == [roster[1], roster[5], roster[9]]
        assert reads.roster_of([]) == []
    finally:
        storage.close()


def test_the_fleet_detectors_are_fitted_once_and_the_same_baselines_not_hashed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, storage = _fleet(tmp_path)
    try:
        load_records(storage, records)
        now = _time(records[-1]["received_at"]) + timedelta(minutes=1)
        catch_up(storage, now)
        baselines = refresh_baselines(storage, now, CONFIG)
        stored = load_baselines(storage)
        assert stored is not None and stored is not baselines
    finally:
        storage.close()
    hashed, fitted = [], []
    hash_features = pd.util.hash_pandas_object
    fit = Baselines._fit
    monkeypatch.setattr(incremental.pd.util, "hash_pandas_object", lambda frame: hashed.append(1) or hash_features(frame))
    monkeypatch.setattr(Baselines, "_fit", lambda self, config: fitted.append(1) or fit(self, config))
    monkeypatch.setattr(incremental, "_FITTED", {})

    first = baselines.fitted(CONFIG.detection)
    assert baselines.fitted(CONFIG.detection) is first and baselines.fitted(CONFIG.detection) is first
    assert (len(hashed), len(fitted)) == (1, 1)  # every batch of a run after the first: neither
    assert stored.fitted(CONFIG.detection) is first  # equal baselines read again: hashed, not refitted
    assert (len(hashed), len(fitted)) == (2, 1)
    changed = dataclasses.replace(baselines, device_features=baselines.device_features * 2)
    assert changed.fitted(CONFIG.detection) is not first  # other features: fitted on them
    assert (len(hashed), len(fitted)) == (3, 2)
    assert set(changed.fitted(CONFIG.detection)) == set(first)
