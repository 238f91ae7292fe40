"""What the console reads and writes besides accounts: the fleet list, the audit log, analysts'
actions (acknowledgements, suppressions, notes) and onboarding verifications.

Reads only the store (verdicts, the fleet index, devices, roster); it never calls into ingest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from farmwatch.collector.tables import (
    acknowledgements,
    audit_log,
    devices,
    fleet_index,
    notes,
    roster,
    suppressions,
    verifications,
)
from farmwatch.contract import NetworkKind, RosterEntry, Verdict

VERDICTS = ("farm", "review", "clear")
NETWORK_KINDS: tuple[str, ...] = get_args(NetworkKind)
PAGE_SIZE = 50
MAX_SUPPRESSION_DAYS = 90


@dataclass(frozen=True)
class FleetFilter:
    """The fleet page's filters; every field optional."""

    verdict: str | None = None
    detector: str | None = None
    network_kind: str | None = None
    silent_days: int | None = None  # not seen for at least this many days
    search: str | None = None  # a substring of the device id, hostname or employee id


@dataclass(frozen=True)
class FleetPage:
    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int


class ConsoleStore:
    """The console's queries and writes; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(write=True)

    # --- the fleet ----------------------------------------------------------------------------

    def fleet(self, wanted: FleetFilter, page: int, now: datetime) -> FleetPage:
        """Devices ranked by risk (unscored last), ``PAGE_SIZE`` a page, with the filters applied."""
        joined = devices.outerjoin(fleet_index, fleet_index.c.device_id == devices.c.device_id)
        conditions = []
        if wanted.verdict:
            conditions.append(fleet_index.c.verdict == wanted.verdict)
        if wanted.detector:
            conditions.append(fleet_index.c.detectors.contains(f"|{wanted.detector}|", autoescape=True))
        if wanted.network_kind:
            conditions.append(fleet_index.c.network_kind == wanted.network_kind)
        if wanted.silent_days is not None:
            conditions.append(devices.c.last_seen < now - timedelta(days=wanted.silent_days))
        if wanted.search:
            needle = wanted.search.strip()
            conditions.append(sa.or_(*(column.contains(needle, autoescape=True) for column in (
                devices.c.device_id, devices.c.hostname, fleet_index.c.employee_id))))
        where = sa.and_(sa.true(), *conditions)
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(joined).where(where)).scalar_one()
            pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
            page = min(max(page, 1), pages)
            # Rank only the ids, then read the page's 50 rows: sorting 100,000 (id, risk) pairs is far
            # cheaper than sorting whole rows with their reasons' text.
            ranked = list(connection.execute(
                sa.select(devices.c.device_id).select_from(joined).where(where)
                .order_by(sa.func.coalesce(fleet_index.c.risk, -1.0).desc(), devices.c.device_id)
                .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
            ).scalars())
            rows = {row["device_id"]: dict(row) for row in connection.execute(
                sa.select(devices.c.device_id, devices.c.hostname, devices.c.last_seen, fleet_index.c.risk,
                          fleet_index.c.verdict, fleet_index.c.employee_id, fleet_index.c.city,
                          fleet_index.c.network_kind, fleet_index.c.top_detector, fleet_index.c.top_summary,
                          fleet_index.c.cluster)
                .select_from(joined).where(devices.c.device_id.in_(ranked))
            ).mappings()}
        return FleetPage([rows[device] for device in ranked], total, page, pages)

    def counts(self) -> dict[str, int]:
        """Devices per verdict label (and 'unscored')."""
        with self.engine.connect() as connection:
            scored: dict[str, int] = dict(connection.execute(
                sa.select(fleet_index.c.verdict, sa.func.count()).group_by(fleet_index.c.verdict)).all())
            enrolled = connection.execute(sa.select(sa.func.count()).select_from(devices)).scalar_one()
        return {**{label: scored.get(label, 0) for label in VERDICTS}, "unscored": enrolled - sum(scored.values())}

    def device(self, device_id: str) -> dict[str, Any] | None:
        """The device row (hostname, enrolled_at, last_seen) with its fleet index row, or None."""
        joined = devices.outerjoin(fleet_index, fleet_index.c.device_id == devices.c.device_id)
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(devices.c.device_id, devices.c.hostname, devices.c.enrolled_at, devices.c.last_seen,
                          fleet_index.c.cluster, fleet_index.c.network_kind)
                .select_from(joined).where(devices.c.device_id == device_id)
            ).mappings().first()
        return dict(row) if row else None

    def cluster_members(self, cluster: str) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(
                sa.select(fleet_index.c.device_id).where(fleet_index.c.cluster == cluster)
                .order_by(fleet_index.c.device_id)).scalars())

    def roster_entries(self, device_ids: list[str]) -> dict[str, RosterEntry]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(roster.c.entry).where(roster.c.device_id.in_(device_ids))).scalars().all()
        entries = [RosterEntry.model_validate_json(text) for text in rows]
        return {entry.device_id: entry for entry in entries}

    # --- the audit log ------------------------------------------------------------------------

    def audit(self, analyst: str, action: str, now: datetime, device_id: str | None = None, detail: str = "") -> None:
        with self._writer.begin() as tx:
            tx.execute(audit_log.insert().values(at=now, analyst=analyst, action=action, device_id=device_id,
                                                 detail=detail))

    def audit_entries(self, *, device_id: str | None = None, analyst: str | None = None,
                      since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if device_id:
            query = query.where(audit_log.c.device_id == device_id)
        if analyst:
            query = query.where(audit_log.c.analyst == analyst)
        if since:
            query = query.where(audit_log.c.at >= since)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    # --- actions ------------------------------------------------------------------------------

    def acknowledge(self, device_id: str, analyst: str, verdict: Verdict, now: datetime) -> None:
        with self._writer.begin() as tx:
            tx.execute(acknowledgements.insert().values(device_id=device_id, analyst=analyst, at=now,
                                                        verdict=verdict.verdict, risk=verdict.risk))
            tx.execute(audit_log.insert().values(at=now, analyst=analyst, action="acknowledge", device_id=device_id,
                                                 detail=f"{verdict.verdict} at risk {verdict.risk:.2f}"))

    def suppress(self, device_id: str, detector: str, reason: str, days: int, analyst: str, now: datetime) -> None:
        """Mark ``detector`` a false positive for ``device_id`` for ``days`` days (and audit it)."""
        until = now + timedelta(days=days)
        with self._writer.begin() as tx:
            tx.execute(suppressions.insert().values(device_id=device_id, detector=detector, reason=reason,
                                                    analyst=analyst, created_at=now, expires_at=until))
            tx.execute(audit_log.insert().values(
                at=now, analyst=analyst, action="suppress", device_id=device_id,
                detail=json.dumps({"detector": detector, "reason": reason, "until": until.isoformat()})))

    def lift(self, suppression_id: int, device_id: str, analyst: str, now: datetime) -> bool:
        """End a suppression early; False when it is not a live suppression of ``device_id``."""
        with self._writer.begin() as tx:
            lifted = tx.execute(suppressions.update().where(
                suppressions.c.id == suppression_id, suppressions.c.device_id == device_id,
                suppressions.c.lifted_at.is_(None), suppressions.c.expires_at > now).values(lifted_at=now)).rowcount
            if lifted:
                tx.execute(audit_log.insert().values(at=now, analyst=analyst, action="lift_suppression",
                                                     device_id=device_id, detail=f"suppression {suppression_id}"))
        return bool(lifted)

    def annotate(self, device_id: str, text: str, analyst: str, now: datetime) -> None:
        with self._writer.begin() as tx:
            tx.execute(notes.insert().values(device_id=device_id, analyst=analyst, at=now, text=text))
            tx.execute(audit_log.insert().values(at=now, analyst=analyst, action="annotate", device_id=device_id,
                                                 detail=text[:200]))

    def actions(self, device_id: str, now: datetime) -> dict[str, list[dict[str, Any]]]:
        """The device's suppressions (each with ``live``), acknowledgements and notes, newest first."""
        with self.engine.connect() as connection:
            def rows(table: sa.Table) -> list[dict[str, Any]]:
                return [dict(row) for row in connection.execute(
                    sa.select(table).where(table.c.device_id == device_id).order_by(table.c.id.desc())).mappings()]
            found = {"suppressions": rows(suppressions), "acknowledgements": rows(acknowledgements),
                     "notes": rows(notes)}
        for item in found["suppressions"]:
            item["live"] = item["lifted_at"] is None and item["expires_at"] > now
        return found

    # --- onboarding ---------------------------------------------------------------------------

    def record_verification(self, verdict: dict[str, Any], observed_seconds: int, now: datetime) -> None:
        """Keep the answer ``POST /api/v1/verify`` gave (the Onboarding page lists them)."""
        with self._writer.begin() as tx:
            hostname = tx.execute(
                sa.select(devices.c.hostname).where(devices.c.device_id == verdict["device_id"])).scalar_one_or_none()
            tx.execute(verifications.insert().values(
                at=now, device_id=verdict["device_id"], hostname=hostname, employee_id=verdict.get("employee_id"),
                observed_seconds=observed_seconds, verdict=verdict["verdict"], risk=verdict["risk"],
                answer=json.dumps(verdict)))

    def verifications(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(
                sa.select(verifications.c.id, verifications.c.at, verifications.c.device_id, verifications.c.hostname,
                          verifications.c.employee_id, verifications.c.observed_seconds, verifications.c.verdict,
                          verifications.c.risk)
                .order_by(verifications.c.id.desc()).limit(limit)).mappings()]

    def verification(self, verification_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(verifications).where(verifications.c.id == verification_id)).mappings().first()
        if row is None:
            return None
        return {**dict(row), "answer": json.loads(row["answer"])}
