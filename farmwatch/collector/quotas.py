"""Per-device quotas, kept in the database so every replica enforces the same ones.

A device may store ``reports_per_device_per_hour`` reports in each UTC clock hour and
``report_bytes_per_device_per_day`` bytes in each UTC day (``[limits]``). Fixed windows, not sliding
ones: one row per device and period, rewritten inside the transaction that stores the report (which
already holds the device row's lock), so the check and the charge cannot race between replicas.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from farmwatch.collector.limits import Limits
from farmwatch.collector.tables import device_quota

HOUR, DAY = "hour", "day"


def _starts(now: datetime) -> dict[str, datetime]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    return {HOUR: hour, DAY: hour.replace(hour=0)}


def _lengths() -> dict[str, timedelta]:
    return {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}


def _used(tx: Connection, device_id: str, now: datetime) -> dict[str, tuple[int, int]]:
    """(reports, bytes) stored by the device in the current hour and day."""
    starts = _starts(now)
    used = {HOUR: (0, 0), DAY: (0, 0)}
    for row in tx.execute(sa.select(device_quota).where(device_quota.c.device_id == device_id)):
        if row.period in starts and row.period_start == starts[row.period]:
            used[row.period] = (row.reports, row.bytes)
    return used


def wait_seconds(tx: Connection, device_id: str, now: datetime, size: int, limits: Limits) -> float | None:
    """Seconds until the device may store a report of ``size`` bytes, or None when it may now."""
    used = _used(tx, device_id, now)
    starts, lengths = _starts(now), _lengths()
    over = []
    if used[HOUR][0] + 1 > limits.reports_per_device_per_hour:
        over.append(HOUR)
    if used[DAY][1] + size > limits.report_bytes_per_device_per_day:
        over.append(DAY)
    if not over:
        return None
    return max((starts[period] + lengths[period] - now).total_seconds() for period in over)


def charge(tx: Connection, device_id: str, now: datetime, size: int) -> None:
    """Count one stored report of ``size`` bytes against the device's current hour and day."""
    used = _used(tx, device_id, now)
    for period, start in _starts(now).items():
        reports, stored = used[period]
        values = {"period_start": start, "reports": reports + 1, "bytes": stored + size}
        match = (device_quota.c.device_id == device_id) & (device_quota.c.period == period)
        if not tx.execute(device_quota.update().where(match).values(**values)).rowcount:
            tx.execute(device_quota.insert().values(device_id=device_id, period=period, **values))
