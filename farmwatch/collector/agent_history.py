"""What the collector knows of a device's agent that its reports cannot say: re-enrolments and restarts.

A fresh install of the agent on a known machine enrols again under the same hardware id (the
``enrolments`` table gets a renewal row), and a sequence that restarted shows only as reports the
store refused because their seq was taken with other content (409): the agent renumbers and re-sends
them, so the stored sequence never goes back. Both are evidence (issue 16), and detectors read only
ingest records, so every stored record is stamped with the device's counts at the time
(``enrolments``, ``seq_conflicts``): a detector sees them rise between two reports, and an export
scored offline gives the same verdict. Both functions run inside the transaction that stores or
refuses the report, which already holds the device row's lock.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

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


def stamp(tx: Connection, device_id: str) -> dict[str, int]:
    """The ingest record's ``enrolments`` and ``seq_conflicts`` for a report of ``device_id`` stored now."""
    enrolled = sa.select(sa.func.count()).select_from(enrolments).where(enrolments.c.device_id == device_id)
    refused = sa.select(seq_conflicts.c.conflicts).where(seq_conflicts.c.device_id == device_id)
    row = tx.execute(sa.select(enrolled.scalar_subquery(), refused.scalar_subquery())).one()
    return {"enrolments": int(row[0] or 0), "seq_conflicts": int(row[1] or 0)}
