"""What a scoring run reads about the whole fleet is read once per run, and still gives every batch
the answer a fresh read would (:class:`farmwatch.collector.incremental.FleetReads`,
:class:`farmwatch.collector.rollups.FleetLastWindowEnd`).

A simulated fleet (farmwatch.simulator) is stored in a real collector store (SQLite file) and
reduced by the collector's reducer in steps, as reports arrive during a run.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from collector_helpers import report_for
from prometheus_client import CollectorRegistry

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector import incremental, scoring
from farmwatch.collector.incremental import Baselines, FleetReads, load_baselines, refresh_baselines, score_devices
from farmwatch.collector.ingest import digest, ingest_record, parse_report
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.rollups import FleetLastWindowEnd, catch_up, devices_since, last_window_end, neighbours
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import rollups
from farmwatch.contract import to_wire
from farmwatch.detectors.base import Detector
from farmwatch.detectors.config import DetectionConfig
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


def _reduced(storage: Storage, records: list[dict[str, Any]]) -> tuple[datetime, datetime, Baselines, list[str]]:
    """Store and reduce every record; a minute after the last: that time, the lookback's start, the
    fleet baselines learned then and the devices in the lookback."""
    load_records(storage, records)
    now = _time(records[-1]["received_at"]) + timedelta(minutes=1)
    since = now - timedelta(hours=CONFIG.lookback_hours)
    catch_up(storage, now)
    return now, since, refresh_baselines(storage, now, CONFIG), devices_since(storage, since)


def test_the_fleet_s_newest_window_end_follows_each_reduction_as_a_full_read_does(tmp_path: Path) -> None:
    records, storage = _fleet(tmp_path)
    try:
        end = _time(records[-1]["received_at"])
        now = end + timedelta(minutes=1)
        since = now - timedelta(hours=CONFIG.lookback_hours)
        newest = FleetLastWindowEnd(storage, since)
        assert newest() is None  # nothing reduced yet
        answers: list[datetime] = []
        cuts = [_time(records[0]["received_at"]), end - timedelta(hours=6), end - timedelta(hours=1),
                end + timedelta(seconds=1)]
        for start, cut in zip(cuts, cuts[1:]):  # the reports arriving in steps, reduced after each
            load_records(storage, [r for r in records if start <= _time(r["received_at"]) < cut])
            catch_up(storage, now)
            found = newest()
            assert found is not None and found == last_window_end(storage, since)
            answers.append(found)
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
        now, since, baselines, devices = _reduced(storage, records)
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
        reads = FleetReads(storage.roster_texts(), lambda: None)
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
    hashed: list[pd.DataFrame] = []
    fitted: list[Baselines] = []
    hash_features, fit = pd.util.hash_pandas_object, Baselines._fit

    def hash_counted(frame: pd.DataFrame) -> pd.Series:
        hashed.append(frame)
        return hash_features(frame)

    def fit_counted(self: Baselines, config: DetectionConfig) -> dict[str, Detector]:
        fitted.append(self)
        return fit(self, config)

    monkeypatch.setattr(pd.util, "hash_pandas_object", hash_counted)
    monkeypatch.setattr(Baselines, "_fit", fit_counted)
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


def test_a_run_reduces_once_and_a_report_stored_during_it_is_scored_by_the_next_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    clock = [datetime(2026, 11, 28, 5, 0, tzinfo=timezone.utc)]
    config = dataclasses.replace(CONFIG, batch_devices=1)
    scorer = Scorer(storage, config, Metrics(CollectorRegistry(), lambda: 0), lambda: clock[0])

    def store(device: str, seq: int) -> None:
        report = parse_report(json.dumps(report_for(device, seq)).encode())
        geo = {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}
        storage.add_report(ingest_record(report, clock[0], "127.0.0.1", geo), digest(report), clock[0])

    try:
        for device in ("dev-a", "dev-b"):
            storage.enrol(hardware_id=f"hw-{device}", hostname="h", source_ip="127.0.0.1", new_device_id=device,
                          token=f"token-{device}", now=clock[0])
            store(device, 1)
        claim = storage.claim_scoring
        arrived: list[str] = []

        def claim_after_a_report_arrives(*args: Any, **kwargs: Any) -> Any:
            if not arrived:  # the run has reduced and marked; a report arrives as its batches begin
                store("dev-a", 2)
                arrived.append("dev-a")
            return claim(*args, **kwargs)

        monkeypatch.setattr(storage, "claim_scoring", claim_after_a_report_arrives)
        assert scorer.run(bounded=True) == 2
        assert scorer.stale_devices() == {"dev-a"}
        assert catch_up(storage, clock[0]) == 1  # the run's batches left the report that came in to the reducer
        clock[0] += timedelta(minutes=5)
        assert scorer.run(bounded=True) == 1  # marked by its new rollup, scored once more
        assert scorer.stale_devices() == set()
    finally:
        storage.close()


def test_a_batch_s_neighbourhood_is_read_once_and_scores_as_a_batch_that_reads_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, storage = _fleet(tmp_path)  # shared egress: devices have neighbours
    try:
        now, since, baselines, devices = _reduced(storage, records)
        linked = [device for device in devices if neighbours(storage, [device]) != {device}]
        for batch in ([linked[0]], [linked[-1], devices[0]]):
            around = neighbours(storage, batch)
            assert around - set(batch)  # the batch loads more devices than it scores
            given = score_devices(storage, batch, now, CONFIG, baselines, neighbourhood=around)
            alone = score_devices(storage, batch, now, CONFIG, baselines)
            assert [to_wire(v) for v in given.verdicts] == [to_wire(v) for v in alone.verdicts]
            assert given.network_kinds == alone.network_kinds

        read: list[int] = []

        def counted(reader: int) -> Any:
            def read_neighbours(*args: Any) -> set[str]:
                read.append(reader)
                return neighbours(*args)
            return read_neighbours

        monkeypatch.setattr(incremental, "neighbours", counted(0))
        monkeypatch.setattr(scoring, "neighbours", counted(1))
        claims = storage.claim_scoring
        claimed: list[int] = []

        def claim(*args: Any, **kwargs: Any) -> Any:
            claimed.append(len(kwargs))
            return claims(*args, **kwargs)

        monkeypatch.setattr(storage, "claim_scoring", claim)
        config = dataclasses.replace(CONFIG, batch_devices=3)
        scorer = Scorer(storage, config, Metrics(CollectorRegistry(), lambda: 0), lambda: now)
        assert scorer.run(bounded=True) == len(devices)
        batches = claimed.count(0)  # claims of a batch (the neighbours' claims pass ``among``) and the last, empty one
        assert batches > 2 and read == [1] * (batches - 1)  # once per batch, by the scorer, never by score_devices
    finally:
        storage.close()
