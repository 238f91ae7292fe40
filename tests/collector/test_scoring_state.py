"""Scoring state in the store: leases between replicas, which devices count as stale, and who keeps the
fleet baselines."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from collector_helpers import report_for
from prometheus_client import CollectorRegistry

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import BASELINE_MAX_AGE, load_baselines
from farmwatch.collector.ingest import digest, ingest_record, parse_report
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.scoring import REFRESH_AHEAD, Scorer
from farmwatch.collector.storage import Storage
from farmwatch.contract import to_wire
from farmwatch.detectors.pipeline import score
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records

T0 = datetime(2026, 11, 28, 5, 0, tzinfo=timezone.utc)


def test_lease_holder_renewal_lapse_and_release(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'lease.db'}")
    try:
        assert storage.take_lease("scoring", "a", T0, 30)
        assert not storage.take_lease("scoring", "b", T0 + timedelta(seconds=10), 30)
        assert storage.take_lease("scoring", "a", T0 + timedelta(seconds=20), 30)  # renewed until T0+50
        assert not storage.take_lease("scoring", "b", T0 + timedelta(seconds=40), 30)
        assert storage.take_lease("scoring", "b", T0 + timedelta(seconds=51), 30)  # lapsed: b takes over
        assert not storage.take_lease("scoring", "a", T0 + timedelta(seconds=52), 30)
        storage.release_lease("scoring", "a")  # not a's to release: nothing changes
        assert not storage.take_lease("scoring", "a", T0 + timedelta(seconds=53), 30)
        storage.release_lease("scoring", "b")
        assert storage.take_lease("scoring", "a", T0 + timedelta(seconds=54), 30)
    finally:
        storage.close()


def store_report(storage: Storage, device: str, seq: int, at: datetime) -> None:
    report = parse_report(json.dumps(report_for(device, seq)).encode())
    geo = {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}
    storage.add_report(ingest_record(report, at, "127.0.0.1", geo), digest(report), at)


def test_only_devices_seen_within_the_lookback_are_rescored(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'scoring.db'}")
    clock = [T0]
    registry = CollectorRegistry()
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=72)
    scorer = Scorer(storage, config, Metrics(registry, lambda: 0), lambda: clock[0])

    def runs() -> float | None:
        return registry.get_sample_value("farmwatch_scoring_duration_seconds_count")

    try:
        for device, hardware in (("dev-old", "hw-old"), ("dev-new", "hw-new")):
            storage.enrol(hardware_id=hardware, hostname="h", source_ip="127.0.0.1", new_device_id=device,
                          token=f"token-{device}", now=T0)
        store_report(storage, "dev-old", 1, T0)
        scorer.refresh("dev-old")
        assert runs() == 1 and storage.verdict("dev-old") is not None

        clock[0] = T0 + timedelta(hours=100)  # dev-old has been silent longer than the lookback
        storage.replace_roster([])  # marks every verdict stale
        scorer.refresh()
        assert runs() == 1, "a device outside the lookback can never be made fresh, so it must not trigger runs"

        store_report(storage, "dev-new", 1, clock[0])
        scorer.refresh()
        assert runs() == 2 and storage.verdict("dev-new") is not None
        scorer.refresh()
        assert runs() == 2  # nothing new since: no second run
    finally:
        storage.close()


def _two_replicas(storage: Storage, config: CollectorConfig, clock: list[datetime]) -> tuple[Scorer, Scorer]:
    """Two replicas' scorers on one store, both reading the time from ``clock[0]``."""
    first, second = (Scorer(storage, config, Metrics(CollectorRegistry(), lambda: 0), lambda: clock[0]) for _ in "ab")
    return first, second


def _baselines_computed_at(storage: Storage) -> datetime:
    stored = load_baselines(storage)
    assert stored is not None
    return stored.computed_at


def test_one_replica_keeps_the_fleet_baselines(tmp_path: Path) -> None:
    """Two replicas' scorers on one store: only the lease holder refreshes the stored baselines when
    they are due; the other scores with them as stored; a holder that stops hands them over."""
    storage = Storage.open(f"sqlite:///{tmp_path / 'baselines.db'}")
    clock = [T0]
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, detection_interval_seconds=1200)
    first, second = _two_replicas(storage, config, clock)
    computed_at = partial(_baselines_computed_at, storage)

    def run(scorer: Scorer, minutes: int) -> None:
        clock[0] = T0 + timedelta(minutes=minutes)
        scorer.run()

    try:
        storage.enrol(hardware_id="hw-1", hostname="h", source_ip="127.0.0.1", new_device_id="dev-1", token="t", now=T0)
        store_report(storage, "dev-1", 1, T0)
        run(first, 0)  # none stored yet: the first replica takes the lease and learns them
        assert computed_at() == T0
        run(second, 1)
        run(first, 50)  # renews its lease (until +50 min + 3 intervals); the baselines are still fresh
        run(second, 65)  # due (older than an hour), but not its lease: scores with the stored ones
        assert computed_at() == T0
        run(first, 66)
        assert computed_at() == T0 + timedelta(minutes=66)
        first.stop()  # hands the lease over
        run(second, 67)
        assert computed_at() == T0 + timedelta(minutes=66)  # fresh: nothing to do yet
        run(second, 130)
        assert computed_at() == T0 + timedelta(minutes=130)
    finally:
        storage.close()


def test_a_quiet_device_is_rescored_as_its_windows_leave_the_lookback(tmp_path: Path) -> None:
    """Its verdict follows what is left in the lookback (as a full re-read's would), although it
    sends nothing new: the periodic run rescores it once the hour of its windows has aged out."""
    storage = Storage.open(f"sqlite:///{tmp_path / 'scoring.db'}")
    clock = [T0]
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=3)
    scorer = Scorer(storage, config, Metrics(CollectorRegistry(), lambda: 0), lambda: clock[0])
    try:
        for device in ("dev-quiet", "dev-busy"):
            storage.enrol(hardware_id=f"hw-{device}", hostname="h", source_ip="127.0.0.1", new_device_id=device,
                          token=f"token-{device}", now=T0)
        store_report(storage, "dev-quiet", 1, T0)
        store_report(storage, "dev-quiet", 2, T0 + timedelta(hours=1, minutes=30))
        store_report(storage, "dev-busy", 1, T0)
        scorer.run(bounded=True)
        first = storage.verdict("dev-quiet")
        assert first is not None
        for hour in (2, 3):  # only dev-busy reports; the lookback has not lost a whole hour of dev-quiet yet
            clock[0] = T0 + timedelta(hours=hour)
            store_report(storage, "dev-busy", hour, clock[0])
            scorer.run(bounded=True)
        assert storage.verdict("dev-quiet") == first
        clock[0] = T0 + timedelta(hours=4, minutes=5)  # T0's hour has wholly left the 3-hour lookback
        scorer.run(bounded=True)
        later = storage.verdict("dev-quiet")
        assert later is not None and later.scored_at == clock[0]
    finally:
        storage.close()


def test_the_keeper_refreshes_the_baselines_beside_the_runs_ahead_of_their_expiry(tmp_path: Path) -> None:
    """The lease holder's keeper refreshes the stored baselines once they are within REFRESH_AHEAD of
    BASELINE_MAX_AGE, so the runs in that time score with fresh stored ones and never refresh them
    themselves; a keeper without the lease refreshes nothing."""
    storage = Storage.open(f"sqlite:///{tmp_path / 'keeper.db'}")
    clock = [T0]
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, detection_interval_seconds=300)
    first, second = _two_replicas(storage, config, clock)
    computed_at = partial(_baselines_computed_at, storage)

    def at(minutes: float) -> None:
        clock[0] = T0 + timedelta(minutes=minutes)

    try:
        storage.enrol(hardware_id="hw-1", hostname="h", source_ip="127.0.0.1", new_device_id="dev-1", token="t", now=T0)
        store_report(storage, "dev-1", 1, T0)
        first.run()  # none stored yet: the holder learns them in its run
        assert computed_at() == T0
        keep_until = BASELINE_MAX_AGE - REFRESH_AHEAD
        at(keep_until.total_seconds() / 60 - 1)
        first.keeper.step()  # not due yet
        second.keeper.step()  # not the holder
        assert computed_at() == T0
        at(keep_until.total_seconds() / 60 + 1)
        second.keeper.step()  # due, but the lease is first's: nothing
        assert computed_at() == T0
        first.run()  # due for the keeper, still fresh for a run: the run does not refresh them
        assert computed_at() == T0
        first.keeper.step()
        assert computed_at() == clock[0]
        refreshed = clock[0]
        at(BASELINE_MAX_AGE.total_seconds() / 60 + 1)  # past the first ones' age: the runs use the keeper's
        first.run()
        second.run()
        assert computed_at() == refreshed
    finally:
        storage.close()


def test_a_batch_takes_its_marked_neighbours_along_and_scores_them_as_a_full_reread_would(tmp_path: Path) -> None:
    """Batches of two on a fleet with farms sharing networks: a batch also claims the marked devices
    of its co-location neighbourhood (it scores them anyway), so batches grow past two, every marked
    device is claimed exactly once, and every verdict equals a full re-read's."""
    files = write_fleet(tmp_path / "fleet", seed=11, legit=16, farms=8, days=4, shared_egress=True)
    records = sorted((orjson.loads(line) for line in files.records.open("rb")), key=lambda r: r["received_at"])
    storage = Storage.open(f"sqlite:///{tmp_path / 'neighbours.db'}")
    load_records(storage, records)
    storage.replace_roster(load_roster(files.roster))
    storage.replace_anchors(load_anchors(files.anchors))
    now = datetime.fromisoformat(records[-1]["received_at"].replace("Z", "+00:00")) + timedelta(minutes=7)
    config = dataclasses.replace(CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20), batch_devices=2)
    scorer = Scorer(storage, config, Metrics(CollectorRegistry(), lambda: 0), lambda: now)
    batches: list[tuple[str, ...]] = []
    save = storage.save_verdicts

    def saving(verdicts: Any, through: int, fleet: Any = None, claim: Any = None, at: Any = None) -> None:
        batches.append(claim.devices)
        save(verdicts, through, fleet, claim, at)

    try:
        storage.save_verdicts = saving  # type: ignore[method-assign, assignment]
        scorer.run()  # reduces the fleet's reports and marks every device (its rollups are new)
        claimed = [device for batch in batches for device in batch]
        assert max(map(len, batches)) > 2, batches
        assert len(claimed) == len(set(claimed)) == len({record["report"]["device_id"] for record in records})
        full = score(storage.records(since=now - timedelta(hours=config.lookback_hours)), storage.roster(),
                     storage.anchors(), now, config.detection, storage.suppressed_detectors(now))
        assert {"farm", "clear"} <= {verdict.verdict for verdict in full}
        for verdict in full:
            stored = storage.verdict(verdict.device_id)
            assert stored is not None and to_wire(stored) == to_wire(verdict), verdict.device_id
    finally:
        storage.close()
