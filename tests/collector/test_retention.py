"""Retention (farmwatch.collector.retention): exactly the rows past their age go, on SQLite and PostgreSQL,
through the function, the one-shot `db prune` command and the job inside a real collector process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from collector_process import RunningCollector, free_port
from test_migrations import new_postgres_database

from farmwatch.collector import retention
from farmwatch.collector.config import ConfigError, load_config
from farmwatch.collector.retention import RULES, RetentionSettings, load_retention, prune
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import (
    alerts,
    audit_log,
    devices,
    enrolments,
    notes,
    outbox,
    refused_reports,
    reports,
    tokens,
    verifications,
    UtcDateTime,
)

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'farmwatch.db'}"
    else:
        url = new_postgres_database(request.getfixturevalue("postgres"), "retention")
    opened = Storage.open(url)
    try:
        yield opened
    finally:
        opened.close()


def at_age(days: float, offset: timedelta = timedelta(0)) -> datetime:
    return NOW - timedelta(days=days) + offset


def seed(storage: Storage) -> None:
    """Rows on both sides of every rule's boundary (exactly N days old is kept), and rows no rule touches."""
    with storage.engine.begin() as tx:
        tx.execute(devices.insert().values(device_id="dev-a", hardware_id="hw-a", hostname="a", enrolled_at=at_age(400)))
        for seq, moment in enumerate([at_age(30, -SECOND), at_age(30), at_age(30, SECOND), at_age(1)], start=1):
            tx.execute(reports.insert().values(device_id="dev-a", seq=seq, digest=f"{seq:064d}", received_at=moment,
                                               record="{}"))
        tx.execute(tokens.insert(), [
            {"token_sha256": "1" * 64, "device_id": "dev-a", "issued_at": at_age(400), "revoked_at": at_age(90, -SECOND)},
            {"token_sha256": "2" * 64, "device_id": "dev-a", "issued_at": at_age(400), "revoked_at": at_age(90)},
            {"token_sha256": "3" * 64, "device_id": "dev-a", "issued_at": at_age(400), "revoked_at": None},  # live
        ])
        tx.execute(enrolments.insert().values(device_id="dev-a", hostname="a", source_ip="192.0.2.1",
                                              enrolled_at=at_age(400), renewal=False))
        tx.execute(audit_log.insert().values(at=at_age(400), analyst="alice", action="view_device", device_id="dev-a",
                                             detail=""))
        tx.execute(notes.insert().values(device_id="dev-a", analyst="alice", at=at_age(400), text="kept"))
        for change, (alert_id, raised) in enumerate([
                ("old-done", at_age(365, -SECOND)), ("old-pending", at_age(400)), ("old-overflow", at_age(400)),
                ("at-limit", at_age(365)), ("old-delivered", at_age(400))], start=1):
            tx.execute(alerts.insert().values(alert_id=alert_id, device_id="dev-a", change=change,
                                              verdict="farm", previous_verdict="clear", risk=0.9, raised_at=raised, body="{}"))
        tx.execute(outbox.insert(), [  # every row names every column: executemany takes the first row's keys
            {"output": "soc", "alert_id": "old-pending", "state": "pending", "created_at": at_age(400), "attempts": 3,
             "delivered_at": None},
            {"output": "soc", "alert_id": "old-overflow", "state": "overflow", "created_at": at_age(400), "attempts": 0,
             "delivered_at": None},
            {"output": "soc", "alert_id": "old-delivered", "state": "delivered", "created_at": at_age(400),
             "attempts": 1, "delivered_at": at_age(30, -SECOND)},
            {"output": "siem2", "alert_id": "old-delivered", "state": "delivered", "created_at": at_age(400),
             "attempts": 1, "delivered_at": at_age(30)},
        ])
        tx.execute(refused_reports.insert(), [
            {"report_id": seq, "device_id": "dev-a", "received_at": moment, "batch": 1, "reason": "window_end"}
            for seq, moment in ((1, at_age(30, -SECOND)), (2, at_age(30)))
        ])
        tx.execute(verifications.insert(), [
            {"at": moment, "device_id": "dev-a", "observed_seconds": 60, "verdict": "clear", "risk": 0.0, "answer": "{}"}
            for moment in (at_age(365, -SECOND), at_age(365))
        ])


def rows(storage: Storage, column: sa.Column[object]) -> list[object]:
    with storage.engine.connect() as connection:
        return sorted(connection.execute(sa.select(column)).scalars(), key=repr)


@pytest.mark.slow
def test_prune_deletes_exactly_the_rows_past_their_age(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(storage)
    monkeypatch.setattr(retention, "BATCH_ROWS", 1)  # every rule goes through several batches
    deleted = prune(storage.engine, RetentionSettings(), NOW)
    assert deleted == {"reports_days": 1, "delivered_alerts_days": 1, "alerts_days": 1, "verifications_days": 1,
                       "revoked_tokens_days": 1, "rollups_days": 0, "sightings_days": 0,  # rollups: test_incremental_scoring
                       "refused_reports_days": 1}
    assert rows(storage, refused_reports.c.report_id) == [2]
    assert rows(storage, reports.c.seq) == [2, 3, 4]  # 30 days + 1 s old went; exactly 30 days stays
    assert rows(storage, tokens.c.token_sha256) == ["2" * 64, "3" * 64]
    assert rows(storage, outbox.c.output) == ["siem2", "soc", "soc"]  # pending and overflow stay whatever their age
    # old-delivered still has a delivery row (siem2's, exactly 30 days old): the alert stays with it.
    assert rows(storage, alerts.c.alert_id) == ["at-limit", "old-delivered", "old-overflow", "old-pending"]
    assert len(rows(storage, verifications.c.id)) == 1
    assert [len(rows(storage, c)) for c in (devices.c.device_id, enrolments.c.id, audit_log.c.id, notes.c.id)] == [1] * 4

    # A second later each boundary row is past its age; old-delivered's last delivery goes first, then the alert.
    assert prune(storage.engine, RetentionSettings(), NOW + SECOND) == {
        "reports_days": 1, "delivered_alerts_days": 1, "alerts_days": 2, "verifications_days": 1,
        "revoked_tokens_days": 1, "rollups_days": 0, "sightings_days": 0, "refused_reports_days": 1}
    assert rows(storage, alerts.c.alert_id) == ["old-overflow", "old-pending"]


def test_the_registry_names_each_key_once_with_a_time_column() -> None:
    assert len({rule.key for rule in RULES}) == len(RULES)
    for rule in RULES:
        hours = rule.in_hours and isinstance(rule.table.c[rule.column].type, sa.BigInteger)
        assert rule.key.endswith("_days") and (hours or isinstance(rule.table.c[rule.column].type, UtcDateTime))


@pytest.mark.parametrize("table, problem", [
    pytest.param({"report_days": 30}, "unknown key(s) report_days", id="misspelt"),
    pytest.param({"reports_days": 0}, "reports_days: must be a positive number", id="zero"),
    pytest.param({"alerts_days": "forever"}, "alerts_days: must be a positive number", id="text"),
    pytest.param({"reports_days": 2}, "shorter than [detection] lookback_hours (72 h)", id="shorter-than-lookback"),
    pytest.param({"interval_seconds": -1}, "interval_seconds: must be a positive number", id="interval"),
])
def test_bad_retention_settings_are_refused_by_name(table: dict[str, object], problem: str) -> None:
    with pytest.raises(retention.RetentionError) as refused:
        load_retention(table, "collector.toml", 72)
    assert problem in str(refused.value)


def test_retention_keys_reach_serve_config(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    config = tmp_path / "collector.toml"
    config.write_text("[retention]\nreports_days = 7\ninterval_seconds = 60\n[storage]\nmigrate = \"check\"\n")
    loaded = load_config(config, enroll_secret_file=secret, analyst_token_file=secret)
    assert loaded.retention.days["reports_days"] == 7 and loaded.retention.days["alerts_days"] == 365
    assert (loaded.retention.interval_seconds, loaded.migrate) == (60, "check")
    config.write_text("[storage]\nmigrate = \"sometimes\"\n")
    with pytest.raises(ConfigError, match=r"\[storage\] migrate: must be one of auto, check, got 'sometimes'"):
        load_config(config, enroll_secret_file=secret, analyst_token_file=secret)


def seed_reports(url: str, ages_days: list[float]) -> None:
    """Reports received ``ages_days`` ago (real now), through the storage the collector uses."""
    now = datetime.now(timezone.utc)
    storage = Storage.open(url)
    try:
        with storage.engine.begin() as tx:
            tx.execute(devices.insert().values(device_id="dev-r", hardware_id="hw-r", hostname="r", enrolled_at=now))
            tx.execute(reports.insert(), [
                {"device_id": "dev-r", "seq": n, "digest": f"{n:064d}", "received_at": now - timedelta(days=age), "record": "{}"}
                for n, age in enumerate(ages_days, start=1)])
    finally:
        storage.close()


def count_reports(url: str) -> int:
    storage = Storage.open(url)
    try:
        with storage.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(reports)).scalar_one())
    finally:
        storage.close()


def test_db_prune_runs_once_with_the_configs_ages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'farmwatch.db'}"
    seed_reports(url, [10, 8, 6])
    config = tmp_path / "collector.toml"
    config.write_text("[retention]\nreports_days = 7\n")
    done = subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "db", "prune", "--db", url, "--config",
                           str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "reports_days = 7: deleted 2 raw reports" in done.stdout
    assert count_reports(url) == 1


@pytest.mark.slow
def test_the_collector_prunes_at_start_and_counts_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'collector' / 'farmwatch.db'}"
    (tmp_path / "collector").mkdir()
    seed_reports(url, [45, 31, 29, 0.5])
    running = RunningCollector(workdir=tmp_path / "collector", port=free_port(), database=url,
                               config_text="[retention]\nreports_days = 30\ninterval_seconds = 3600\n").start()
    try:
        deleted = ""
        for _ in range(100):
            metrics = httpx.get(f"{running.url}/metrics").text
            deleted = next(line for line in metrics.splitlines()
                           if line.startswith('farmwatch_retention_deleted_rows_total{rule="reports_days"}'))
            if not deleted.endswith(" 0.0"):
                break
            time.sleep(0.1)  # the job's first run starts with the collector; give it a moment
        assert deleted.endswith(" 2.0"), deleted
    finally:
        running.stop()
    assert count_reports(url) == 2



def test_one_replica_at_a_time_prunes(tmp_path: Path) -> None:
    """Two collectors' jobs on one database: the lease holder prunes, the other skips until it is released."""
    from prometheus_client import CollectorRegistry

    url = f"sqlite:///{tmp_path / 'farmwatch.db'}"
    seed_reports(url, [40, 35])
    storage = Storage.open(url)
    try:
        first, second = (retention.RetentionJob(storage, RetentionSettings(), CollectorRegistry(),
                                                lambda: datetime.now(timezone.utc)) for _ in range(2))
        assert first.run_once() == {**{rule.key: 0 for rule in RULES}, "reports_days": 2}
        assert second.run_once() is None  # the first holds the lease for interval_seconds
        first.stop()  # a clean shutdown gives the lease up at once
        assert second.run_once() is not None
    finally:
        storage.close()
