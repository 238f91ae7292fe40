"""``devices purge``: remove a device's poisoned or unwanted reports and its verdict, audited.

One transaction: the device's reports (all, or those received before a time) go, its verdict and
fleet-index row go (the next scoring run computes them again from what is left), its rollups and
sightings are rebuilt from the reports left (nothing derived outlives a purged report), and the device's
high-water marks (``last_seq``, ``last_report_id``, ``last_seen``) are recomputed from the reports
left, so a hostile seq near the limit stops blocking the device's next enrolment. The device itself,
its tokens and its enrolment history stay (``devices revoke`` is the tool for tokens). Every purge
writes a row to the audit log (``audit list`` shows it) in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from farmwatch.collector.rollups import refile_device
from farmwatch.collector.tables import UtcDateTime, audit_log, devices, fleet_index, reports, verdicts


@dataclass(frozen=True)
class Purged:
    reports: int
    reports_left: int
    verdict: bool


def purge_device(engine: Engine, device_id: str, before: datetime | None, actor: str, now: datetime) -> Purged:
    """Remove ``device_id``'s reports received before ``before`` (all when None) and its verdict.

    Raises KeyError for a device that was never enrolled."""
    with engine.execution_options(write=True).begin() as tx:
        if tx.execute(sa.select(devices.c.device_id).where(devices.c.device_id == device_id)).first() is None:
            raise KeyError(device_id)
        doomed = reports.c.device_id == device_id
        if before is not None:
            doomed = doomed & (reports.c.received_at < before)
        had = list(tx.execute(sa.select(reports.c.id).where(reports.c.device_id == device_id)).scalars())
        removed = tx.execute(reports.delete().where(doomed)).rowcount
        refile_device(tx, device_id, had)
        verdict = tx.execute(verdicts.delete().where(verdicts.c.device_id == device_id)).rowcount > 0
        tx.execute(fleet_index.delete().where(fleet_index.c.device_id == device_id))
        left = tx.execute(
            sa.select(sa.func.count(), sa.func.max(reports.c.seq), sa.func.max(reports.c.id), sa.func.max(reports.c.received_at, type_=UtcDateTime()))
            .where(reports.c.device_id == device_id)
        ).one()
        tx.execute(devices.update().where(devices.c.device_id == device_id).values(
            last_seq=left[1], last_report_id=left[2], last_seen=left[3]))
        scope = "all reports" if before is None else f"reports received before {before.isoformat()}"
        tx.execute(audit_log.insert().values(
            at=now, analyst=actor, action="purge", device_id=device_id,
            detail=f"removed {removed} of the device's {scope}; {left[0]} left; verdict {'removed' if verdict else 'none'}",
        ))
    return Purged(reports=removed, reports_left=int(left[0]), verdict=verdict)

