"""Retention: delete what the collector no longer needs once it is older than its ``[retention]`` age.

One registry, :data:`RULES`: each rule names a table, the time column that ages its rows (a time,
or whole hours since the epoch for the rollups), the ``[retention]`` key giving the age in days,
and its default. A table that grows with time gets one
line here (and a row in docs/privacy.md, which lists every key, its default and what is kept forever).

Deletion runs in batches of :data:`BATCH_ROWS` rows, one short transaction each, so ingest on the
same tables never waits long behind it. A row exactly ``days`` old is kept; older ones go. The
collector runs :class:`RetentionJob` every ``interval_seconds`` (one replica at a time, by a lease in
the store); ``farmwatch-collector db prune`` runs it once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from farmwatch.collector.periodic import PeriodicWorker
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import alerts, outbox, refused_reports, reports, rollups, sightings, tokens, verifications
from farmwatch.errors import FarmwatchError

log = logging.getLogger(__name__)
BATCH_ROWS = 5000
LEASE = "retention"


class RetentionError(FarmwatchError, ValueError):
    """A bad ``[retention]`` setting; the message names the file, table and key."""


@dataclass(frozen=True)
class RetentionRule:
    """Rows of ``table`` whose ``column`` is older than ``[retention] key`` days are deleted."""

    key: str
    table: sa.Table
    column: str
    default_days: float
    what: str  # for people: the log line and `db prune`'s output
    only: Callable[[sa.Table], ColumnElement[bool]] | None = None  # rows the rule may touch at all
    in_hours: bool = False  # ``column`` holds whole hours since the epoch (rollups, sightings)

    def __post_init__(self) -> None:
        if self.column not in self.table.c:
            raise RetentionError(f"retention rule {self.key}: {self.table.name} needs a column {self.column}")


RULES: tuple[RetentionRule, ...] = (
    RetentionRule("reports_days", reports, "received_at", 30, "raw reports (ingest records)"),
    RetentionRule("delivered_alerts_days", outbox, "delivered_at", 30, "alert deliveries the output accepted",
                  only=lambda t: t.c.state == "delivered"),
    # An alert still waiting in (or overflowed from) an outbox stays until that row is gone.
    RetentionRule("alerts_days", alerts, "raised_at", 365, "alerts with no delivery left in any outbox",
                  only=lambda t: ~sa.exists().where(outbox.c.alert_id == t.c.alert_id)),
    RetentionRule("verifications_days", verifications, "at", 365, "onboarding verification records"),
    RetentionRule("revoked_tokens_days", tokens, "revoked_at", 90, "revoked device tokens (their digests)"),
    # Scoring reads these (farmwatch/collector/rollups.py): like raw reports, they must cover the lookback.
    RetentionRule("rollups_days", rollups, "hour", 30, "hourly rollups of reduced reports, by hour received",
                  in_hours=True),
    RetentionRule("sightings_days", sightings, "hour", 30, "network sightings (identity x hour x device)",
                  in_hours=True),
    RetentionRule("refused_reports_days", refused_reports, "received_at", 30,
                  "why the reducer refused a stored report (a device's error evidence), by time received"),
)
COVER_LOOKBACK = ("reports_days", "rollups_days", "sightings_days", "refused_reports_days")
"""Keys whose tables scoring reads over the lookback window: a shorter age is refused."""
RULE_KEYS = frozenset(rule.key for rule in RULES)


@dataclass(frozen=True)
class RetentionSettings:
    """``[retention]``: days per rule key, and how often the collector runs the job."""

    days: dict[str, float] = field(default_factory=lambda: {rule.key: rule.default_days for rule in RULES})
    interval_seconds: float = 3600.0


def load_retention(table: Any, where: str, lookback_hours: float) -> RetentionSettings:
    """Check ``[retention]`` key by key; raw reports must outlive the scoring lookback window."""
    if not isinstance(table, dict):
        raise RetentionError(f"{where}: [retention] must be a table")
    unknown = sorted(set(table) - RULE_KEYS - {"interval_seconds"})
    if unknown:
        raise RetentionError(f"{where} [retention]: unknown key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(RULE_KEYS | {'interval_seconds'}))}")
    days = {rule.key: _positive(table.get(rule.key, rule.default_days), f"{where} [retention] {rule.key}")
            for rule in RULES}
    for key in COVER_LOOKBACK:
        if days[key] * 24 < lookback_hours:
            raise RetentionError(f"{where} [retention] {key}: {days[key]:g} days is shorter than "
                                 f"[detection] lookback_hours ({lookback_hours:g} h): scoring would lose records it reads")
    interval = _positive(table.get("interval_seconds", 3600), f"{where} [retention] interval_seconds")
    return RetentionSettings(days=days, interval_seconds=interval)


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise RetentionError(f"{where}: must be a positive number of days, got {value!r}")
    return float(value)


def prune(engine: Engine, settings: RetentionSettings, now: datetime) -> dict[str, int]:
    """Delete, rule by rule, what is older than its age; rows deleted per rule key."""
    writer = engine.execution_options(write=True)  # SQLite: BEGIN IMMEDIATE, like every writer
    deleted: dict[str, int] = {}
    for rule in RULES:
        cutoff = now - timedelta(days=settings.days[rule.key])
        deleted[rule.key] = _prune_rule(writer, rule, cutoff)
        if deleted[rule.key]:
            log.info("retention: deleted %d %s older than %s", deleted[rule.key], rule.what, cutoff.isoformat())
    return deleted


def _prune_rule(writer: Engine, rule: RetentionRule, cutoff: datetime) -> int:
    table = rule.table
    keys = tuple(table.primary_key.columns)
    aged = table.c[rule.column] < (int(cutoff.timestamp() // 3600) if rule.in_hours else cutoff)
    condition = aged if rule.only is None else sa.and_(aged, rule.only(table))
    total = 0
    while True:
        batch = sa.select(*keys).where(condition).limit(BATCH_ROWS)
        # A composite key (rollups: device and hour) is matched as a row value.
        chosen = keys[0].in_(batch.scalar_subquery()) if len(keys) == 1 else sa.tuple_(*keys).in_(batch)
        with writer.begin() as tx:
            count = tx.execute(table.delete().where(chosen)).rowcount
        total += count
        if count < BATCH_ROWS:
            return total


class RetentionJob(PeriodicWorker):
    """Runs :func:`prune` every ``interval_seconds`` on the replica holding the retention lease, the
    first time as it starts (a collector restarted daily still prunes)."""

    def __init__(
        self, storage: Storage, settings: RetentionSettings, registry: CollectorRegistry, clock: Callable[[], datetime]
    ) -> None:
        super().__init__("farmwatch-retention", settings.interval_seconds,
                         "retention run failed; retrying at the next interval",
                         Counter("farmwatch_retention_failures", "Retention runs that failed (retried next interval).",
                                 registry=registry))
        self.storage = storage
        self.settings = settings
        self.clock = clock
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.deleted = Counter("farmwatch_retention_deleted_rows", "Rows the retention job deleted, by [retention] key.",
                               ["rule"], registry=registry)
        self.last_success = Gauge("farmwatch_retention_last_success_timestamp_seconds",
                                  "Unix time this replica last finished a retention run (0: none yet).", registry=registry)
        for rule in RULES:
            self.deleted.labels(rule.key)

    def run_once(self) -> dict[str, int] | None:
        """Prune now if this replica holds (or takes) the lease; None when another replica has it."""
        now = self.clock()
        if not self.storage.take_lease(LEASE, self.holder, now, self.settings.interval_seconds):
            return None
        deleted = prune(self.storage.engine, self.settings, now)
        for key, count in deleted.items():
            self.deleted.labels(key).inc(count)
        self.last_success.set(time.time())
        return deleted

    def step(self) -> None:
        self.run_once()

    def next_delay(self, last_step_seconds: float | None) -> float:
        """At once when the job starts, then every ``interval_seconds`` from the start of a run."""
        if last_step_seconds is None:
            return 0.0
        return max(self.interval_seconds - last_step_seconds, 0.001)

    def stop(self) -> None:
        super().stop()
        try:  # another replica may take over at once
            self.storage.release_lease(LEASE, self.holder)
        except sa.exc.SQLAlchemyError:
            log.warning("could not release the retention lease; it lapses by itself")
