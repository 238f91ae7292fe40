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
