"""Per-device quotas, kept in the database so every replica enforces the same ones.

A device may store ``reports_per_device_per_hour`` reports in each UTC clock hour and
``report_bytes_per_device_per_day`` bytes in each UTC day (``[limits]``). Fixed windows, not sliding
ones: one row per device and period, rewritten inside the transaction that stores the report (which
already holds the device row's lock), so the check and the charge cannot race between replicas.
A group-commit batch reads the rows of all its devices at once (:func:`usage`), checks and charges
in memory (:func:`wait_for`, :func:`charge`) and writes the changed rows back at once (:func:`save`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from farmwatch.collector import driver_sql
from farmwatch.collector.limits import Limits
from farmwatch.collector.tables import device_quota

HOUR, DAY = "hour", "day"
Used = dict[str, tuple[int, int]]
"""Per period: (reports, bytes) stored in the current hour and day."""

_READ = f"SELECT device_id, period, period_start, reports, bytes FROM {device_quota.name} WHERE device_id IN :devices"
# Rewritten for every device of every group-commit batch: straight to the driver (driver_sql.py), in
# one statement for all the batch's rows, new or not (upsert: SQLite 3.24+, https://sqlite.org/lang_upsert.html).
_SAVE = (f"INSERT INTO {device_quota.name} (device_id, period, period_start, reports, bytes) VALUES :rows "
         "ON CONFLICT (device_id, period) DO UPDATE SET period_start = excluded.period_start, "
         "reports = excluded.reports, bytes = excluded.bytes")


def _starts(now: datetime) -> dict[str, datetime]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    return {HOUR: hour, DAY: hour.replace(hour=0)}


_LENGTHS = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}


@dataclass
class Usage:
    """The quota rows of some devices as read in this transaction, and what was charged since."""

    now: datetime
    used: dict[str, Used] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)

    def of(self, device_id: str) -> Used:
        return self.used.get(device_id, {HOUR: (0, 0), DAY: (0, 0)})


def usage(tx: Connection, device_ids: Collection[str], now: datetime) -> Usage:
    """The current hour's and day's use of every device in ``device_ids``, in one query."""
    # Compared as stored: the driver hands back the column's raw form (SQLite: SQLAlchemy's text of it).
    starts = {period: driver_sql.stored_time(tx, start) for period, start in _starts(now).items()}
    found = Usage(now)
    for device_id, period, period_start, reports, stored in driver_sql.fetch(tx, _READ, {"devices": list(device_ids)}):
        if period in starts and period_start == starts[period]:
            found.used.setdefault(device_id, {HOUR: (0, 0), DAY: (0, 0)})[period] = (reports, stored)
    return found


def wait_for(used: Used, now: datetime, size: int, limits: Limits) -> float | None:
    """Seconds until a device with ``used`` may store a report of ``size`` bytes, or None when it may now."""
    over = []
    if used[HOUR][0] + 1 > limits.reports_per_device_per_hour:
        over.append(HOUR)
    if used[DAY][1] + size > limits.report_bytes_per_device_per_day:
        over.append(DAY)
    if not over:
        return None
    starts = _starts(now)  # only here: this runs twice for every report a batch stores (issue 13)
    return max((starts[period] + _LENGTHS[period] - now).total_seconds() for period in over)


def charge(found: Usage, device_id: str, size: int) -> None:
    """Count one stored report of ``size`` bytes against the device's current hour and day (in memory)."""
    used = found.of(device_id)
    found.used[device_id] = {period: (reports + 1, stored + size) for period, (reports, stored) in used.items()}
    found.changed.add(device_id)


def save(tx: Connection, found: Usage) -> None:
    """Write the rows of every device charged since :func:`usage`."""
    starts = {period: driver_sql.stored_time(tx, start) for period, start in _starts(found.now).items()}
    driver_sql.execute_values(tx, _SAVE, [
        (device_id, period, start, *found.used[device_id][period])
        for device_id in sorted(found.changed) for period, start in starts.items()])

