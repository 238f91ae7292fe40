"""Alerts are decided in the verdict's transaction: once per change, per output threshold, bounded.

Real SQLite store (a file in tmp), real outputs writing files; no mocks. The PostgreSQL race between
two collectors is in test_alerts_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from siem_receivers import HttpReceiver
from prometheus_client import CollectorRegistry, Counter, generate_latest

from farmwatch.collector import outbox
from farmwatch.collector.alerts import Alert, told_next
from farmwatch.collector.delivery import Alerting, DeliveryWorker
from farmwatch.collector.outputs import REGISTRY
from farmwatch.collector.outputs.base import parse_outputs
from farmwatch.collector.outputs.ecs_file import EcsFileOutput
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import alerts, outbox as outbox_table
from farmwatch.contract import RosterEntry, Verdict

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)


def verdict(label: str, risk: float, device: str = "dev-1", at: datetime = NOW) -> Verdict:
    finding = {"detector": "remote_access", "severity": "high", "score": risk, "evidence": {"tool": "anydesk"},
               "summary": "AnyDesk session\ncontrolled from 7400 km away", "attack": "T1219",
               "first_seen": "2026-11-28T08:00:00Z", "last_seen": "2026-11-28T08:55:00Z"}
    return Verdict.model_validate_json(json.dumps({
        "device_id": device, "employee_id": "E-17", "scored_at": at.isoformat(), "risk": risk, "verdict": label,
        "findings": [finding] if label != "clear" else []}))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage.open(f"sqlite:///{tmp_path / 'farmwatch.db'}")
    for n in (1, 2):
        storage.enrol(hardware_id=f"hw-{n}", hostname=f"tp-{n}", source_ip="127.0.0.1", new_device_id=f"dev-{n}",
                      token=f"token-{n}-" + "x" * 20, now=NOW)
    storage.replace_roster([RosterEntry(device_id="dev-1", employee_id="E-17", country="US", city="Austin",
                                        latitude=30.3, longitude=-97.7, timezone="America/Chicago", approved_tools=[])])
    try:
        yield storage
    finally:
        storage.close()


def alerting(store: Storage, tmp_path: Path, **max_pending: int) -> Alerting:
    tables = [
        {"type": "ecs_file", "name": "any", "url": str(tmp_path / "any.ndjson"), "min_verdict": "review",
         "max_pending": max_pending.get("any", 100)},
        {"type": "ocsf", "name": "farm-only", "url": str(tmp_path / "farm.ndjson"), "min_verdict": "farm"},
    ]
    return Alerting(store, parse_outputs(tables, REGISTRY, "test"), "https://farmwatch.example.com/",
                    CollectorRegistry(), lambda: NOW)


def history(store: Storage) -> list[tuple[str, str, list[str]]]:
    """(previous, verdict, outputs told) of every alert, oldest first."""
    return [(row["previous_verdict"], row["verdict"], sorted(o["output"] for o in row["outputs"]))
            for row in reversed(outbox.recent(store, 100))]


@pytest.mark.parametrize(
    ("floor", "told", "new", "hears"),
    [
        pytest.param("review", "clear", "review", True, id="reaches-review"),
        pytest.param("farm", "clear", "review", False, id="below-farm"),
        pytest.param("farm", "clear", "farm", True, id="reaches-farm"),
        pytest.param("farm", "farm", "review", True, id="changes-after-reaching"),
        pytest.param("farm", "review", "clear", True, id="resolution-after-hearing"),
        pytest.param("review", "review", "review", False, id="unchanged"),
    ],
)
def test_who_hears_of_a_change(floor: str, told: str, new: str, hears: bool) -> None:
    assert told_next(floor, told, new) is hears


def test_one_alert_per_change_and_none_for_rescores(store: Storage, tmp_path: Path) -> None:
    alerting(store, tmp_path)
    steps = [("review", 0.6), ("review", 0.65), ("farm", 0.93), ("farm", 0.95), ("review", 0.6), ("clear", 0.1),
             ("clear", 0.05)]
    for through, (label, risk) in enumerate(steps, start=1):
        store.save_verdicts([verdict(label, risk)], through_report_id=through)
    assert history(store) == [
        ("clear", "review", ["any"]),
        ("review", "farm", ["any", "farm-only"]),
        ("farm", "review", ["any", "farm-only"]),
        ("review", "clear", ["any", "farm-only"]),
    ]
    # A restart builds a new recorder over the same database: the same verdict again is no change.
    alerting(store, tmp_path)
    store.save_verdicts([verdict("clear", 0.05)], through_report_id=99)
    assert len(history(store)) == 4


def test_a_run_over_older_reports_does_not_flip_the_alerted_label(store: Storage, tmp_path: Path) -> None:
    alerting(store, tmp_path)
    store.save_verdicts([verdict("farm", 0.9)], through_report_id=10)
    store.save_verdicts([verdict("review", 0.6)], through_report_id=9)  # a slow replica's stale run
    store.save_verdicts([verdict("farm", 0.9)], through_report_id=11)
    assert history(store) == [("clear", "farm", ["any", "farm-only"])]


def test_the_alert_carries_what_the_soc_needs(store: Storage, tmp_path: Path) -> None:
    alerting(store, tmp_path)
    store.save_verdicts([verdict("farm", 0.93)], through_report_id=1)
    with store.engine.connect() as connection:
        alert = Alert.model_validate_json(connection.execute(sa.select(alerts.c.body)).scalar_one())
    assert (alert.device_id, alert.hostname, alert.employee_id, alert.claimed_city, alert.claimed_country) == (
        "dev-1", "tp-1", "E-17", "Austin", "US")
    assert (alert.verdict, alert.previous_verdict, alert.risk, alert.attack_ids) == ("farm", "clear", 0.93, ("T1219",))
    assert alert.findings[0].summary == "AnyDesk session controlled from 7400 km away"  # one line
    assert alert.findings[0].evidence == {"tool": "anydesk"}
    assert (alert.first_seen, alert.last_seen) == (NOW - timedelta(hours=1), NOW - timedelta(minutes=5))
    assert alert.link == "https://farmwatch.example.com/console/devices/dev-1"
    assert alert.kind == "raised" and not alert.test


def test_devices_never_affect_each_others_alerts(store: Storage, tmp_path: Path) -> None:
    alerting(store, tmp_path)
    store.save_verdicts([verdict("farm", 0.9, "dev-1"), verdict("clear", 0.0, "dev-2")], through_report_id=1)
    store.save_verdicts([verdict("farm", 0.9, "dev-1"), verdict("review", 0.6, "dev-2")], through_report_id=2)
    rows = outbox.recent(store, 10)
    assert sorted((r["device_id"], r["verdict"]) for r in rows) == [("dev-1", "farm"), ("dev-2", "review")]


def test_a_full_outbox_keeps_the_alert_as_overflow_counts_and_logs_it(
    store: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry_owner = alerting(store, tmp_path, any=1)
    store.save_verdicts([verdict("review", 0.6, "dev-1"), verdict("review", 0.6, "dev-2")], through_report_id=1)
    with store.engine.connect() as connection:
        states = connection.execute(sa.select(outbox_table.c.state).where(outbox_table.c.output == "any")
                                    .order_by(outbox_table.c.id)).scalars().all()
    assert states == ["pending", "overflow"]
    assert "outbox of output 'any' is full" in caplog.text
    worker = next(w for w in registry_owner.workers if w.output.name == "any")
    assert worker.step() == 1  # the pending one goes out; the overflowed one is never sent
    assert worker.step() == 0
    assert len((tmp_path / "any.ndjson").read_text().splitlines()) == 1


def test_metrics_read_the_outbox_and_verdicts(store: Storage, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    tables = [{"type": "ecs_file", "name": "any", "url": str(tmp_path / "any.ndjson")}]
    made = Alerting(store, parse_outputs(tables, REGISTRY, "test"), None, registry, lambda: NOW + timedelta(seconds=90))
    store.save_verdicts([verdict("review", 0.6, "dev-1"), verdict("clear", 0.0, "dev-2")], through_report_id=1)
    text = generate_latest(registry).decode()
    assert 'farmwatch_outbox_pending{output="any"} 1.0' in text
    assert 'farmwatch_outbox_oldest_pending_age_seconds{output="any"} 90.0' in text
    assert 'farmwatch_devices_by_verdict{verdict="review"} 1.0' in text
    assert 'farmwatch_devices_by_verdict{verdict="clear"} 1.0' in text
    made.workers[0].step()
    text = generate_latest(registry).decode()
    assert 'farmwatch_outbox_pending{output="any"} 0.0' in text
    assert 'farmwatch_alert_deliveries_total{output="any",result="accepted"} 1.0' in text


def test_a_failing_output_is_data_and_leaves_the_other_outputs_alone(store: Storage, tmp_path: Path) -> None:
    made = alerting(store, tmp_path)
    (tmp_path / "any.ndjson").mkdir()  # the 'any' output's file cannot be written any more
    store.save_verdicts([verdict("farm", 0.9)], through_report_id=1)
    broken, healthy = made.workers
    assert broken.step() == 0 and healthy.step() == 1
    [row] = outbox.recent(store, 10)
    states = {o["output"]: (o["state"], o["attempts"], o["last_error"]) for o in row["outputs"]}
    assert states["farm-only"] == ("delivered", 1, None)
    assert states["any"][:2] == ("pending", 1) and "Is a directory" in states["any"][2]
    (tmp_path / "any.ndjson").rmdir()
    assert broken.step() == 1  # the same alert, once the output works again


class ExplodingOutput(EcsFileOutput):
    """An output with a bug: its send raises something that is not DeliveryFailed."""

    def send(self, batch: Sequence[Alert]) -> str:
        raise ZeroDivisionError("a bug in an output")


def test_an_output_that_raises_is_counted_as_failed_and_retried(store: Storage, tmp_path: Path) -> None:
    [settings] = parse_outputs([{"type": "ecs_file", "url": str(tmp_path / "x.ndjson")}], REGISTRY, "test")
    Alerting(store, [settings], None, CollectorRegistry(), lambda: NOW)  # records the alert and its outbox row
    registry = CollectorRegistry()
    deliveries = Counter("test_deliveries", "deliveries", ["output", "result"], registry=registry)
    worker = DeliveryWorker(store, ExplodingOutput(settings), deliveries, lambda: NOW)
    store.save_verdicts([verdict("review", 0.6)], through_report_id=1)
    assert worker.step() == 0
    assert registry.get_sample_value("test_deliveries_total", {"output": "ecs_file", "result": "failed"}) == 1
    [row] = outbox.recent(store, 1)
    assert row["outputs"][0]["last_error"] == "ZeroDivisionError: a bug in an output"


def test_alerts_list_shows_each_outputs_delivery_state(store: Storage, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from farmwatch.collector.cli import main

    database = str(tmp_path / "farmwatch.db")
    assert main(["alerts", "list", "--db", database]) == 0
    assert capsys.readouterr().out == "no alerts yet\n"
    made = alerting(store, tmp_path)
    store.save_verdicts([verdict("farm", 0.93)], through_report_id=1)
    made.workers[1].step()  # farm-only delivers; 'any' has not tried yet
    assert main(["alerts", "list", "--db", database, "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2026-11-28T09:00:00Z  ") and lines[0].endswith("  dev-1 (tp-1)  clear -> farm  risk 0.93")
    assert lines[1:] == ["    any: pending after 0 attempt(s)", "    farm-only: delivered 2026-11-28T09:00:00Z"]
    assert main(["alerts", "list", "--db", database, "--limit", "0"]) == 1
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_a_webhook_batch_that_fails_midway_keeps_what_was_accepted(store: Storage, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("k" * 32)
    receiver = HttpReceiver(hec_token="unused", webhook_secret="k" * 32, refuse_after=1).start()
    try:
        tables = [{"type": "webhook", "url": f"{receiver.url}/webhook", "secret_file": str(tmp_path / "secret")}]
        [worker] = Alerting(store, parse_outputs(tables, REGISTRY, "test"), None, CollectorRegistry(), lambda: NOW).workers
        store.save_verdicts([verdict("review", 0.6, "dev-1"), verdict("farm", 0.9, "dev-2")], through_report_id=1)
        assert worker.step() == 1  # the first went through, the second was refused
        states = [o["state"] for row in reversed(outbox.recent(store, 10)) for o in row["outputs"]]
        assert states == ["delivered", "pending"]
        receiver.refuse_after = None
        assert worker.step() == 1
        delivered = [doc["device_id"] for doc in receiver.documents("/webhook")]
        assert delivered == ["dev-1", "dev-2"]  # each once, in order
    finally:
        receiver.stop()


def test_alerts_of_an_output_no_longer_configured_are_kept_and_named(
    store: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alerting(store, tmp_path)
    store.save_verdicts([verdict("farm", 0.9)], through_report_id=1)
    registry = CollectorRegistry()
    tables = [{"type": "ecs_file", "name": "renamed", "url": str(tmp_path / "r.ndjson")}]
    restarted = Alerting(store, parse_outputs(tables, REGISTRY, "test"), None, registry, lambda: NOW)
    restarted.start()
    restarted.stop()
    assert "1 alert(s) wait for output 'any', which is no longer configured" in caplog.text
    assert "1 alert(s) wait for output 'farm-only'" in caplog.text
    text = generate_latest(registry).decode()
    assert 'output="renamed"' in text and 'output="any"' not in text  # metrics name configured outputs only
    assert [o["state"] for o in outbox.recent(store, 1)[0]["outputs"]] == ["pending", "pending"]
