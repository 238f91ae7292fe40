"""A stored window outside the contract's bounds counts against its own device and nobody else's.

Ingest refuses such windows (farmwatch.contract: times from 2000 to before 2100), but a database
may still hold one (written by an older collector, restored, or tampered with). The reducer refuses
it per report and files the refusal as the device's own evidence: the device earns a review with a
``scoring_error`` finding naming the field, and its window never reaches another device's frames,
the fleet baselines or the fleet's last report time. Checked by storing the same simulated fleet
twice (SQLite file), once with a window ending in 2262 written straight into the store (bypassing
ingest), and comparing everything else.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import FleetReads, load_baselines, refresh_baselines, score_devices
from farmwatch.collector.isolation import ERROR_DETECTOR
from farmwatch.collector.rollups import catch_up, changed_devices, devices_since, last_window_end, neighbours
from farmwatch.collector.scoring import score_claimed
from farmwatch.collector.storage import Storage
from farmwatch.contract import to_wire
from farmwatch.detectors.frame import RecordError, reduce_record
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records

CONFIG = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=72)
HOSTILE_END = "2262-04-12T00:00:00Z"  # past pandas' datetime64[ns] range: it once broke every run


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _open(path: Path, records: list[dict[str, Any]], roster: Path, anchors: Path) -> Storage:
    storage = Storage.open(f"sqlite:///{path}")
    load_records(storage, records)
    storage.replace_roster(load_roster(roster))
    storage.replace_anchors(load_anchors(anchors))
    return storage


def test_a_window_past_the_contract_s_bounds_counts_only_against_its_own_device(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = write_fleet(tmp_path / "fleet", seed=41, legit=16, farms=8, days=1)
    records = sorted((orjson.loads(line) for line in files.records.open("rb")), key=lambda r: r["received_at"])
    last = _time(records[-1]["received_at"])
    now = last + timedelta(minutes=5)
    clean = _open(tmp_path / "clean.db", records, files.roster, files.anchors)
    poisoned = _open(tmp_path / "poisoned.db", records, files.roster, files.anchors)
    try:
        since = now - timedelta(hours=CONFIG.lookback_hours)
        for storage in (clean, poisoned):
            catch_up(storage, now, since)
        _, mark = changed_devices(poisoned, 0)
        fleet = devices_since(clean, since)
        # The hostile device shares a network with others: its window would reach their frames.
        hostile = next(device for device in fleet if len(neighbours(clean, {device})) > 1)
        newest = [r for r in records if r["report"]["device_id"] == hostile][-1]
        bad = copy.deepcopy(newest)
        bad["report"]["seq"] += 1
        bad["report"]["window_end"] = HOSTILE_END
        bad["received_at"] = (last + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
        assert load_records(poisoned, [bad]) == 1  # straight into the store, as an old row would sit there

        catch_up(poisoned, now, since)
        changed, _ = changed_devices(poisoned, mark)
        assert hostile in changed  # the refusal is the device's news: it is rescored
        assert last_window_end(poisoned, since) == last_window_end(clean, since) < _time("2100-01-01T00:00:00Z")

        learned = {name: refresh_baselines(storage, now, CONFIG) for name, storage in
                   (("clean", clean), ("poisoned", poisoned))}
        assert learned["poisoned"].input_thresholds == learned["clean"].input_thresholds
        pd.testing.assert_frame_equal(learned["poisoned"].device_features, learned["clean"].device_features)
        assert hostile in learned["poisoned"].device_features.index  # its good windows still count

        expected = {v.device_id: to_wire(v) for v in score_devices(clean, fleet, now, CONFIG).verdicts}
        batch = score_claimed(poisoned, CONFIG, fleet, now, FleetReads.read(poisoned, since), load_baselines(poisoned) or learned["poisoned"])
        got = {v.device_id: to_wire(v) for v in batch.verdicts}
        assert "scoring run failed" not in caplog.text  # the window never reached the detectors
        assert set(batch.broken) == {hostile} and HOSTILE_END in batch.broken[hostile]  # counted as a device error
        assert {d: v for d, v in got.items() if d != hostile} == {d: v for d, v in expected.items() if d != hostile}

        mine = got[hostile]
        errors = [f for f in mine["findings"] if f["detector"] == ERROR_DETECTOR]
        assert len(errors) == 1 and "window_end" in errors[0]["evidence"]["error"], errors
        assert HOSTILE_END in errors[0]["evidence"]["error"]
        assert mine["risk"] >= CONFIG.detection.review_threshold and mine["verdict"] in ("review", "farm")
        others = [f for f in mine["findings"] if f["detector"] != ERROR_DETECTOR]
        assert others == expected[hostile]["findings"]  # judged on its good windows as before
        assert mine["risk"] == max(expected[hostile]["risk"], CONFIG.detection.review_threshold)
        alone = score_devices(poisoned, [hostile], now, CONFIG).verdicts
        assert [to_wire(v) for v in alone] == [mine]
    finally:
        clean.close()
        poisoned.close()


def _record(**times: str) -> dict[str, Any]:
    """A minimal ingest record with every time the reduction checks, each overridable by its field."""
    at = {"window_start": "2026-12-04T09:00:00Z", "window_end": "2026-12-04T09:05:00Z", "boot_time": "2026-12-04T08:00:00Z",
          "started_at": "2026-12-04T08:30:00Z", "connection_first_seen": "2026-12-04T09:01:00Z",
          "session_last_seen": "2026-12-04T09:04:00Z", **times}
    return {"report": {
        "device_id": "dev-a", "window_start": at["window_start"], "window_end": at["window_end"],
        "host": {"boot_time": at["boot_time"]},
        "remote_access": [{"tool": "anydesk", "started_at": at["started_at"],
                           "connections": [{"remote_ip": "192.0.2.7", "first_seen": at["connection_first_seen"]}]}],
        "sessions": [{"kind": "ssh", "last_seen": at["session_last_seen"]}],
    }}


@pytest.mark.parametrize("field, value, named", [
    ("window_end", HOSTILE_END, "report.window_end"),
    ("window_end", "2100-01-01T00:00:00Z", "report.window_end"),
    ("window_start", "1999-12-31T23:59:59Z", "report.window_start"),
    ("window_end", "9999-12-31T23:30:00-05:00", "report.window_end"),  # no UTC form at all
    ("window_end", "2026-12-04T09:05:00", "report.window_end"),  # no time zone
    ("window_end", "yesterday", "report.window_end"),
    ("boot_time", "2262-01-01T00:00:00Z", "report.host.boot_time"),
    ("started_at", "2262-01-01T00:00:00Z", "report.remote_access[].started_at"),
    ("connection_first_seen", "1970-01-01T00:00:00Z", "report.remote_access[].connections[].first_seen"),
    ("session_last_seen", "2262-01-01T00:00:00Z", "report.sessions[].last_seen"),
])
def test_the_reduction_refuses_a_time_the_contract_refuses_naming_the_field(field: str, value: str, named: str) -> None:
    with pytest.raises(RecordError, match=re.escape(f"report 7: {named} {value!r} is not a time from 2000-01-01")):
        reduce_record(_record(**{field: value}), "report 7")


def test_the_reduction_keeps_times_at_the_contract_s_bounds() -> None:
    window = reduce_record(_record(window_start="2000-01-01T00:00:00Z", window_end="2099-12-31T23:59:59Z"))
    assert window.row[0] == "dev-a" and len(window.tools) == len(window.sessions) == 1
