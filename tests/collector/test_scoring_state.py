"""Scoring state in the store: the scoring lease between replicas, and which devices count as stale."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from collector_helpers import report_for
from prometheus_client import CollectorRegistry

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.ingest import digest, ingest_record, parse_report
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage

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
