"""One bisection (farmwatch.collector.isolation.isolate) finds the devices that make a step fail,
for scoring and for the fleet-baseline refresh alike."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from farmwatch.collector import incremental
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.isolation import isolate
from farmwatch.collector.rollups import catch_up, devices_since
from farmwatch.collector.storage import Storage
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records

CONFIG = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=72)


def test_isolate_narrows_a_failure_to_the_devices_that_fail_alone() -> None:
    devices = [f"dev-{n:02d}" for n in range(32)]
    bad = {"dev-03", "dev-04", "dev-29"}
    attempts: list[list[str]] = []
    succeeded: list[str] = []

    def attempt(part: list[str]) -> None:
        attempts.append(part)
        culprits = sorted(bad & set(part))
        if culprits:
            raise ValueError(f"cannot use {culprits[0]}")
        succeeded.extend(part)

    broken = isolate(attempt, devices)
    assert broken == {device: f"ValueError: cannot use {device}" for device in sorted(bad)}
    assert succeeded == [device for device in devices if device not in bad]  # each once, in order
    assert len(attempts) <= 2 * len(bad) * math.log2(len(devices)) + 1
    assert isolate(attempt, []) == {} and isolate(attempt, ["dev-00"]) == {}


def test_the_fleet_baselines_leave_out_only_the_device_they_cannot_learn_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    files = write_fleet(tmp_path / "fleet", seed=43, legit=16, farms=8, days=1)
    records = sorted((orjson.loads(line) for line in files.records.open("rb")), key=lambda r: r["received_at"])
    now = datetime.fromisoformat(records[-1]["received_at"].replace("Z", "+00:00")) + timedelta(minutes=5)
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    try:
        load_records(storage, records)
        since = now - timedelta(hours=CONFIG.lookback_hours)
        catch_up(storage, now, since)
        fleet = devices_since(storage, since)
        clean = incremental.refresh_baselines(storage, now, CONFIG).device_features
        assert list(clean.index) == fleet
        unlearnable = fleet[len(fleet) // 3]
        learned_from = incremental.raw_device_features

        def breaks_on_one_device(frames: Any, *args: Any) -> pd.DataFrame:
            if unlearnable in set(frames.reports["device_id"]):  # a detector bug its windows trigger
                raise ZeroDivisionError("a feature this device's windows cannot give")
            return learned_from(frames, *args)

        monkeypatch.setattr(incremental, "raw_device_features", breaks_on_one_device)
        with caplog.at_level(logging.WARNING, logger="farmwatch.collector.incremental"):
            features = incremental.refresh_baselines(storage, now, CONFIG).device_features
        pd.testing.assert_frame_equal(features, clean.drop(index=unlearnable))  # everyone else, as before
        assert f"device {unlearnable} left out of the fleet baselines: ZeroDivisionError" in caplog.text
    finally:
        storage.close()
