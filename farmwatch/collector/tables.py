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
