"""The collector's tables: one SQLAlchemy ``MetaData`` that both SQLite and PostgreSQL create.

Times are stored as naive UTC (:class:`UtcDateTime`) and handed back tz-aware; integer keys are
``BIGINT`` on PostgreSQL and SQLite's rowid ``INTEGER`` there.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp column that takes and returns tz-aware UTC datetimes on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


metadata = sa.MetaData()
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("hardware_id", sa.String(256), nullable=False, unique=True),
    sa.Column("hostname", sa.String(256), nullable=False),
    sa.Column("enrolled_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime()),
    sa.Column("last_seq", sa.BigInteger),
    # Highest reports.id of this device: a verdict computed through a lower id is stale.
    sa.Column("last_report_id", sa.BigInteger),
)
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False, index=True),
    sa.Column("issued_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime()),
)
enrolments = sa.Table(
    "enrolments",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False, index=True),
    sa.Column("hostname", sa.String(256), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=False),
    sa.Column("enrolled_at", UtcDateTime(), nullable=False),
    sa.Column("renewal", sa.Boolean, nullable=False),
)
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False, index=True),
    sa.Column("record", sa.Text, nullable=False),
    sa.UniqueConstraint("device_id", "seq", name="reports_device_seq"),
)
roster = sa.Table(
    "roster",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("entry", sa.Text, nullable=False),
)
anchors = sa.Table(
    "anchors",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("entry", sa.Text, nullable=False),
)
verdicts = sa.Table(
    "verdicts",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("scored_at", UtcDateTime(), nullable=False),
    sa.Column("through_report_id", sa.BigInteger, nullable=False),
    sa.Column("verdict", sa.Text, nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)

# --- the analyst console (farmwatch/collector/console/) ---------------------------------------
analysts = sa.Table(
    "analysts",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(256), nullable=False),  # argon2id, PHC string format
    sa.Column("created_at", UtcDateTime(), nullable=False),
)
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("session_sha256", sa.String(64), primary_key=True),  # the cookie is never stored
    sa.Column("analyst", sa.String(64), sa.ForeignKey("analysts.name", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False, index=True),
    sa.Column("analyst", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(32), nullable=False),  # sign_in, view_device, acknowledge, suppress, ...
    sa.Column("device_id", sa.String(128), index=True),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)
suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), nullable=False, index=True),
    sa.Column("detector", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("analyst", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=False, index=True),
    sa.Column("lifted_at", UtcDateTime()),
)
acknowledgements = sa.Table(
    "acknowledgements",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), nullable=False, index=True),
    sa.Column("analyst", sa.String(64), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),  # the verdict the analyst saw
    sa.Column("risk", sa.Float, nullable=False),
)
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.String(128), nullable=False, index=True),
    sa.Column("analyst", sa.String(64), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)
# One row per scored device, written with its verdict, so the fleet page filters and ranks 100,000
# devices with indexed columns instead of parsing every verdict's JSON.
fleet_index = sa.Table(
    "fleet_index",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("risk", sa.Float, nullable=False, index=True),
    sa.Column("verdict", sa.String(16), nullable=False, index=True),
    sa.Column("employee_id", sa.String(128), index=True),
    sa.Column("city", sa.String(128)),
    sa.Column("network_kind", sa.String(16)),  # geo.network_kind of the newest record scored
    sa.Column("top_detector", sa.String(64)),
    sa.Column("top_summary", sa.Text),
    sa.Column("detectors", sa.Text, nullable=False, default=""),  # "|a|b|": every detector with a finding
    sa.Column("cluster", sa.String(128), index=True),  # the co-location cluster (its smallest device id)
)
verifications = sa.Table(
    "verifications",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime(), nullable=False, index=True),
    sa.Column("device_id", sa.String(128), nullable=False, index=True),
    sa.Column("hostname", sa.String(256)),
    sa.Column("employee_id", sa.String(128)),
    sa.Column("observed_seconds", sa.Integer, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("risk", sa.Float, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),  # the verdict JSON the agent was given
)

# --- alerts and their durable outbox (farmwatch/collector/alerts.py, outbox.py) ----------------
# The verdict label each device last had, written in the verdict's transaction: the one row that
# decides whether a stored verdict is a change. Its primary key makes two replicas that score the
# same change race on one insert, so exactly one of them raises the alert.
verdict_state = sa.Table(
    "verdict_state",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("verdict", sa.String(16), nullable=False, index=True),
    sa.Column("changes", sa.BigInteger, nullable=False),  # how many label changes so far
    sa.Column("through_report_id", sa.BigInteger, nullable=False),  # of the run that set ``verdict``
    sa.Column("changed_at", UtcDateTime(), nullable=False),
)
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(64), nullable=False, unique=True),  # stable: receivers dedupe on it
    sa.Column("device_id", sa.String(128), nullable=False, index=True),
    sa.Column("change", sa.BigInteger, nullable=False),  # verdict_state.changes that raised it
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("previous_verdict", sa.String(16), nullable=False),
    sa.Column("risk", sa.Float, nullable=False),
    sa.Column("raised_at", UtcDateTime(), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),  # the Alert as JSON (farmwatch.collector.alerts.Alert)
    sa.UniqueConstraint("device_id", "change", name="alerts_device_change"),
)
# What each output was last told about each device (an output with min_verdict = farm never heard
# of a review, so a review -> clear is no news to it).
alert_told = sa.Table(
    "alert_told",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("output", sa.String(128), primary_key=True),
    sa.Column("verdict", sa.String(16), nullable=False),
)
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("output", sa.String(128), nullable=False),
    sa.Column("alert_id", sa.String(64), sa.ForeignKey("alerts.alert_id"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | overflow
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("answer", sa.Text),  # what the receiver said when it accepted
    sa.Column("delivered_at", UtcDateTime()),
    sa.UniqueConstraint("output", "alert_id", name="outbox_output_alert"),
    sa.Index("outbox_output_state_id", "output", "state", "id"),
)

# Per-device quotas ([limits]): what a device stored in the current UTC hour and day. One row per
# device and period, rewritten in the transaction that stores a report, so every replica sharing the
# database enforces the same quota.
device_quota = sa.Table(
    "device_quota",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("period", sa.String(8), primary_key=True),  # "hour" | "day"
    sa.Column("period_start", UtcDateTime(), nullable=False),
    sa.Column("reports", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
)

# --- scoring shared by replicas (farmwatch/collector/scoring_work.py) --------------------------
# One row per device that needs scoring. Ingest bumps ``version``; a replica claims rows (SKIP
# LOCKED on PostgreSQL) until ``claimed_until``, and after storing the verdicts deletes the rows
# whose version is still the one it claimed (a device re-dirtied meanwhile stays, to be scored again).
scoring_work = sa.Table(
    "scoring_work",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),  # bumped by every mark
    sa.Column("dirtied_at", UtcDateTime(), nullable=False, index=True),  # the first unscored mark
    sa.Column("claimed_by", sa.String(128)),  # the replica scoring it, until claimed_until
    sa.Column("claimed_until", UtcDateTime()),
    sa.Column("claimed_version", sa.BigInteger),
)

# --- agent tampering as evidence (issue 16; read by detectors/signals/agent_health.py) ----------
# Reports refused because their seq was already stored with other content: a sequence that
# restarted. The agent renumbers and re-sends them, so this count is all that keeps the restart.
# One row per device (a counter, not a row per refusal: a device cannot grow it without bound).
seq_conflicts = sa.Table(
    "seq_conflicts",
    metadata,
    sa.Column("device_id", sa.String(128), sa.ForeignKey("devices.device_id"), primary_key=True),
    sa.Column("conflicts", sa.BigInteger, nullable=False),
    sa.Column("first_at", UtcDateTime(), nullable=False),
    sa.Column("last_at", UtcDateTime(), nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),  # the seq of the latest refused report
)

# --- incremental features (farmwatch/collector/rollups.py, incremental.py; issue 12) ------------
# Reports reduced once, by a background reducer, to what detectors read: one row per device and
# hour of receipt holding that hour's reduced windows (JSON: named columns, packed when ``layout`` is
# "packed", rollups.PACKED, plain lists when "columns", rollups.COLUMNS; else one list per window,
# column order named by ``layout``: earlier versions' rows, and an hour still being filled, rollups.LAYOUT).
rollups = sa.Table(
    "rollups",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True),  # hours since the epoch of the reports' receipt
    sa.Column("layout", sa.String(16), nullable=False),  # "packed", "columns", or rollup_layouts.layout (per-window rows)
    sa.Column("reports", sa.Integer, nullable=False),
    sa.Column("last_window_end", UtcDateTime(), nullable=False),
    sa.Column("windows", sa.Text, nullable=False),
    sa.Column("batch", sa.BigInteger, nullable=False, index=True),  # the reduction batch that last wrote it
)
rollup_layouts = sa.Table(
    "rollup_layouts",
    metadata,
    sa.Column("layout", sa.String(16), primary_key=True),
    sa.Column("columns", sa.Text, nullable=False),  # JSON: part -> column names
)
# Network identity x window hour x device: who may share a room, found in SQL.
sightings = sa.Table(
    "sightings",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # egress_ip | gateway_mac | wifi_bssid
    sa.Column("identity", sa.String(128), primary_key=True),
    sa.Column("hour", sa.BigInteger, primary_key=True),  # hours since the epoch of the window end
    sa.Column("device_id", sa.String(128), primary_key=True, index=True),
    sa.Column("batch", sa.BigInteger, nullable=False, index=True),  # the reduction batch that added it
)
# One marker per reduced report above rollup_progress.floor_report_id: a report is reduced once.
reduced_reports = sa.Table(
    "reduced_reports",
    metadata,
    sa.Column("report_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("batch", sa.BigInteger, nullable=False),
)
# SQLite only: devices whose pending reports a reducer claimed before reducing them
# (rollups.reduce_pending), so two reducers reduce different devices' reports at once instead of
# the same reports twice (and, writing different devices' rollup rows, never undo each other's
# batch). Held until claimed_until (a dead holder's lapse); deleted in the transaction that files
# the batch. PostgreSQL's reducers hold the rollup_progress row instead and never use this table.
reduction_claims = sa.Table(
    "reduction_claims",
    metadata,
    sa.Column("device_id", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False, index=True),
    sa.Column("claimed_until", UtcDateTime(), nullable=False),
)
# Stored reports the reducer refused (a time outside the contract's bounds, unreadable JSON): each
# is its own device's error evidence (a scoring_error finding), never a window in anyone's frames.
refused_reports = sa.Table(
    "refused_reports",
    metadata,
    sa.Column("report_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("device_id", sa.String(128), nullable=False, index=True),
    sa.Column("received_at", UtcDateTime(), nullable=False, index=True),  # the report's; retention ages it
    sa.Column("batch", sa.BigInteger, nullable=False, index=True),  # the reduction batch that refused it
    sa.Column("reason", sa.Text, nullable=False),
)
# The reducer's one row, held (FOR UPDATE) by the replica reducing: batch numbers and the floor.
rollup_progress = sa.Table(
    "rollup_progress",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("batch", sa.BigInteger, nullable=False),  # the last committed batch
    sa.Column("floor_report_id", sa.BigInteger, nullable=False),  # every report up to it is reduced
)
# What the fleet detectors learned from every device's rollups (incremental.refresh_baselines).
fleet_baselines = sa.Table(
    "fleet_baselines",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("computed_at", UtcDateTime(), nullable=False),
    sa.Column("params", sa.String(16), nullable=False),  # digest of the config they were learned under
    sa.Column("body", sa.Text, nullable=False),
)
