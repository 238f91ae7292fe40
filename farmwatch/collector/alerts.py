"""Alerts: what the SOC hears when a device's verdict changes, decided in the verdict's transaction.

An alert is raised for an output when a device's verdict reaches that output's ``min_verdict`` or
worse, again whenever it changes after that (review -> farm, farm -> review), and once when it is
resolved (clear again). :class:`AlertRecorder` runs inside :meth:`Storage.save_verdicts`' transaction,
so a verdict and its alert (and the alert's outbox rows) are committed together or not at all.

Never twice for one change: ``verdict_state`` holds each device's last label; a re-score with the
same label finds nothing to do, a restart reads the same row, and two replicas storing the same
change race on that row (PostgreSQL: row lock; a first insert: primary key) so only one raises it.
A run that scored older reports than the run that set the stored label raises nothing (a slow
replica must not flip a device back and forth).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Connection

from farmwatch.collector import outbox
from farmwatch.collector.tables import alert_told, alerts, devices, roster, verdict_state
from farmwatch.contract import Verdict

if TYPE_CHECKING:  # the outputs import this module (Alert)
    from farmwatch.collector.outputs.base import OutputSettings

VerdictName = Literal["clear", "review", "farm"]
LEVELS: dict[str, int] = {"clear": 0, "review": 1, "farm": 2}
TOP_FINDINGS = 5  # the SOC gets the strongest reasons; the link shows all of them
CHUNK = 500  # device ids per IN list


class AlertFinding(BaseModel):
    """One reason behind the verdict, as the SOC sees it."""

    model_config = ConfigDict(frozen=True)
    detector: str
    severity: str
    score: float
    summary: str  # one line
    evidence: dict[str, object]
    attack: str | None


class Alert(BaseModel):
    """One verdict change of one device; every output formats this same object."""

    model_config = ConfigDict(frozen=True)
    alert_id: str  # stable across retries and restarts: HTTP receivers dedupe on it
    device_id: str
    hostname: str
    employee_id: str | None
    claimed_city: str | None  # where the roster says the employee works
    claimed_country: str | None
    verdict: VerdictName
    previous_verdict: VerdictName
    risk: float
    findings: tuple[AlertFinding, ...]
    attack_ids: tuple[str, ...]
    first_seen: datetime | None  # earliest first_seen of the findings
    last_seen: datetime | None  # latest last_seen of the findings, else the device's last report
    raised_at: datetime
    link: str | None  # the device's console page under [collector] public_url; None when unset
    test: bool = False  # `farmwatch-collector outputs test`: not about a real device

    @property
    def kind(self) -> Literal["raised", "changed", "resolved"]:
        """raised: from clear; resolved: back to clear; changed: between review and farm."""
        if self.verdict == "clear":
            return "resolved"
        return "raised" if self.previous_verdict == "clear" else "changed"

    def document(self) -> dict[str, Any]:
        """The alert as JSON-ready data, with its kind and title (the JSON, webhook and HEC payload)."""
        return {**self.model_dump(mode="json"), "kind": self.kind, "title": self.title()}

    def title(self) -> str:
        """One line for a human: what happened to which laptop."""
        prefix = "TEST ALERT (farmwatch outputs test): " if self.test else ""
        who = f" of {self.employee_id}" if self.employee_id else ""
        return f"{prefix}laptop {self.hostname}{who} is {self.verdict} (was {self.previous_verdict}), risk {self.risk:.2f}"


def told_next(min_verdict: str, told: str, new: str) -> bool:
    """Whether an output with ``min_verdict`` that last heard ``told`` hears of ``new``.

    It hears every change once the device reached its threshold (``new`` at or above it), and every
    change away from what it last heard unless that was clear (so it hears the resolution too).
    """
    if new == told:
        return False
    return LEVELS[new] >= LEVELS[min_verdict] or told != "clear"


class AlertRecorder:
    """Decides and writes alerts for stored verdicts; built from the configured outputs."""

    def __init__(self, outputs: Sequence[tuple[str, str, int]], public_url: str | None) -> None:
        """``outputs``: (name, min_verdict, max_pending) of each configured output."""
        self.outputs = tuple(outputs)
        self.public_url = public_url.rstrip("/") if public_url else None

    @classmethod
    def configured(cls, outputs: Sequence[OutputSettings], public_url: str | None) -> AlertRecorder:
        """The recorder for the collector's ``[[outputs]]``: every process that stores verdicts
        (``serve`` and its scoring processes) records alerts with them."""
        return cls([(o.name, o.min_verdict, o.max_pending) for o in outputs], public_url)

    def record(self, tx: Connection, scored: Sequence[Verdict], through_report_id: int) -> list[str]:
        """Run inside the verdicts' transaction; returns the ids of the alerts raised."""
        states = {}
        for start in range(0, len(scored), CHUNK):  # bounded IN lists (SQLite caps bound variables)
            chunk = [verdict.device_id for verdict in scored[start:start + CHUNK]]
            for row in tx.execute(
                sa.select(verdict_state).where(verdict_state.c.device_id.in_(chunk)).with_for_update()
            ):
                states[row.device_id] = row
        new_states = []
        raised = []
        for verdict in scored:
            state = states.get(verdict.device_id)
            if state is None:
                # Every scored device gets a row (devices by verdict come from here); a racing replica's
                # insert of the same row fails on the primary key and its retry finds this one.
                new_states.append({"device_id": verdict.device_id, "verdict": verdict.verdict,
                                   "changes": 0 if verdict.verdict == "clear" else 1,
                                   "through_report_id": through_report_id, "changed_at": verdict.scored_at})
                if verdict.verdict != "clear":
                    raised += self._raise(tx, verdict, "clear", 1)
            elif verdict.verdict != state.verdict and through_report_id >= state.through_report_id:
                # (a run over older reports than the one that set the label is stale, not a change)
                tx.execute(verdict_state.update().where(verdict_state.c.device_id == verdict.device_id).values(
                    verdict=verdict.verdict, changes=state.changes + 1, through_report_id=through_report_id,
                    changed_at=verdict.scored_at))
                raised += self._raise(tx, verdict, state.verdict, state.changes + 1)
        if new_states:
            tx.execute(verdict_state.insert(), new_states)
        return raised

    def _raise(self, tx: Connection, verdict: Verdict, previous: str, change: int) -> list[str]:
        """Write the alert of one change and queue it for every output that hears of it."""
        now = verdict.scored_at
        told = dict(tx.execute(
            sa.select(alert_told.c.output, alert_told.c.verdict).where(alert_told.c.device_id == verdict.device_id)
        ).all())
        targets = [(name, bound) for name, floor, bound in self.outputs
                   if told_next(floor, told.get(name, "clear"), verdict.verdict)]
        if not targets:
            return []
        alert = self._build(tx, verdict, previous, now)
        tx.execute(alerts.insert().values(
            alert_id=alert.alert_id, device_id=alert.device_id, change=change, verdict=alert.verdict,
            previous_verdict=previous, risk=alert.risk, raised_at=now, body=alert.model_dump_json()))
        for name, bound in targets:
            outbox.enqueue(tx, name, alert.alert_id, bound, now)
            if name in told:
                tx.execute(alert_told.update().where(
                    alert_told.c.device_id == verdict.device_id, alert_told.c.output == name).values(verdict=verdict.verdict))
            else:
                tx.execute(alert_told.insert().values(device_id=verdict.device_id, output=name, verdict=verdict.verdict))
        return [alert.alert_id]

    def _build(self, tx: Connection, verdict: Verdict, previous: str, now: datetime) -> Alert:
        device = tx.execute(
            sa.select(devices.c.hostname, devices.c.last_seen).where(devices.c.device_id == verdict.device_id)
        ).first()
        entry_text = tx.execute(sa.select(roster.c.entry).where(roster.c.device_id == verdict.device_id)).scalar()
        entry = json.loads(entry_text) if entry_text else {}
        return build_alert(
            verdict, previous, hostname=device.hostname if device else verdict.device_id,
            device_last_seen=device.last_seen if device else None, city=entry.get("city"),
            country=entry.get("country"), link_base=self.public_url, now=now,
            employee_id=verdict.employee_id or entry.get("employee_id"),
        )


def build_alert(
    verdict: Verdict,
    previous: str,
    *,
    hostname: str,
    device_last_seen: datetime | None,
    city: str | None,
    country: str | None,
    link_base: str | None,
    now: datetime,
    employee_id: str | None,
    test: bool = False,
) -> Alert:
    """The alert for ``verdict`` (``previous`` was the label before), with a fresh alert id."""
    strongest = sorted(verdict.findings, key=lambda finding: finding.score, reverse=True)[:TOP_FINDINGS]
    findings = tuple(
        AlertFinding(detector=f.detector, severity=f.severity, score=f.score, summary=" ".join(f.summary.split()),
                     evidence=f.evidence, attack=f.attack)
        for f in strongest
    )
    firsts = [f.first_seen for f in verdict.findings if f.first_seen is not None]
    lasts = [f.last_seen for f in verdict.findings if f.last_seen is not None]
    return Alert(
        alert_id=str(uuid.uuid4()),
        device_id=verdict.device_id,
        hostname=hostname,
        employee_id=employee_id,
        claimed_city=city,
        claimed_country=country,
        verdict=verdict.verdict,
        previous_verdict=previous,  # type: ignore[arg-type]  # a label read from verdict_state
        risk=verdict.risk,
        findings=findings,
        attack_ids=tuple(sorted({f.attack for f in verdict.findings if f.attack})),
        first_seen=min(firsts) if firsts else None,
        last_seen=max(lasts) if lasts else device_last_seen,
        raised_at=now,
        link=f"{link_base}/console/devices/{verdict.device_id}" if link_base else None,
        test=test,
    )
