"""What the collector knows of a device's agent that its reports cannot say: re-enrolments and restarts.

A fresh install of the agent on a known machine enrols again under the same hardware id (the
``enrolments`` table gets a renewal row), and a sequence that restarted shows only as reports the
store refused because their seq was taken with other content (409): the agent renumbers and re-sends
them, so the stored sequence never goes back. Both are evidence (issue 16), and detectors read only
ingest records, so every stored record is stamped with the device's counts at the time
(``enrolments``, ``seq_conflicts``): a detector sees them rise between two reports, and an export
scored offline gives the same verdict. Both run inside the transaction that stores or
refuses the report, which already holds the device row's lock.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy.engine import Connection

from farmwatch.collector import driver_sql
from farmwatch.collector.tables import enrolments, seq_conflicts


def note_seq_conflict(tx: Connection, device_id: str, seq: int, now: datetime) -> None:
    """Count one report of ``device_id`` refused because ``seq`` is stored with other content."""
    counted = tx.execute(
        seq_conflicts.update()
        .where(seq_conflicts.c.device_id == device_id)
        .values(conflicts=seq_conflicts.c.conflicts + 1, last_at=now, last_seq=seq)
    ).rowcount
    if not counted:
        tx.execute(seq_conflicts.insert().values(device_id=device_id, conflicts=1, first_at=now, last_at=now,
                                                 last_seq=seq))


# Read for every group-commit batch: straight to the driver (driver_sql.py).
_ENROLMENTS = f"SELECT device_id, count(*) FROM {enrolments.name} WHERE device_id IN :devices GROUP BY device_id"
_CONFLICTS = f"SELECT device_id, conflicts FROM {seq_conflicts.name} WHERE device_id IN :devices"


def stamps(tx: Connection, device_ids: Collection[str]) -> dict[str, dict[str, int]]:
    """Per device of ``device_ids``, the ingest record's ``enrolments`` and ``seq_conflicts`` for a report
    stored now: two statements for a whole group-commit batch, built once (not two per device)."""
    asked = {"devices": sorted(device_ids)}
    enrolled: dict[str, int] = dict(driver_sql.fetch(tx, _ENROLMENTS, asked))
    refused: dict[str, int] = dict(driver_sql.fetch(tx, _CONFLICTS, asked))
    return {device_id: {"enrolments": int(enrolled.get(device_id, 0)), "seq_conflicts": int(refused.get(device_id) or 0)}
            for device_id in device_ids}
