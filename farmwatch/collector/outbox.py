"""The durable outbox: alerts wait in the database until their output accepted them.

Rows are written by :class:`farmwatch.collector.alerts.AlertRecorder` in the verdict's transaction.
One :class:`farmwatch.collector.delivery.DeliveryWorker` thread per output sends the oldest pending rows in insertion order (so
a device's alerts arrive in the order they were raised), marks them delivered only after the
output accepted them, and otherwise waits with exponential backoff and tries the same rows again.
Replicas sharing one database take turns per output through a lease row, so one sender per output.

A crash after the receiver accepted but before the mark sends that batch again (at least once);
HTTP receivers get the stable ``alert_id`` to drop the copy. Each output holds at most
``max_pending`` pending rows; an alert beyond that is stored as ``overflow`` (counted, logged,
shown by ``alerts list`` and by ``farmwatch_outbox_overflow_total``), never silently dropped.
A failing output is data (attempts, last_error, metrics, a log line), never a crash of another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Connection

from farmwatch.collector.tables import alerts, outbox, verdict_state

if TYPE_CHECKING:
    from farmwatch.collector.storage import Storage

log = logging.getLogger("farmwatch.collector.outbox")
PENDING, DELIVERED, OVERFLOW = "pending", "delivered", "overflow"


def enqueue(tx: Connection, output: str, alert_id: str, max_pending: int, now: datetime) -> str:
    """Queue ``alert_id`` for ``output`` in the caller's transaction; returns the row's state."""
    waiting = tx.execute(
        sa.select(sa.func.count()).select_from(outbox).where(outbox.c.output == output, outbox.c.state == PENDING)
    ).scalar_one()
    state = PENDING if waiting < max_pending else OVERFLOW
    if state == OVERFLOW:
        log.error("outbox of output %r is full (%d pending): alert %s kept as overflow, not sent",
                  output, waiting, alert_id)
    tx.execute(outbox.insert().values(output=output, alert_id=alert_id, state=state, created_at=now, attempts=0))
    return state


@dataclass(frozen=True)
class Pending:
    row_id: int
    alert_body: str


def pending(storage: Storage, output: str, limit: int) -> list[Pending]:
    """The oldest ``limit`` pending rows of ``output``, oldest first."""
    query = (
        sa.select(outbox.c.id, alerts.c.body)
        .select_from(outbox.join(alerts, alerts.c.alert_id == outbox.c.alert_id))
        .where(outbox.c.output == output, outbox.c.state == PENDING)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    with storage.engine.connect() as connection:
        return [Pending(row.id, row.body) for row in connection.execute(query)]


def mark_delivered(storage: Storage, row_ids: Sequence[int], answer: str, now: datetime) -> None:
    with storage.engine.execution_options(write=True).begin() as tx:
        tx.execute(outbox.update().where(outbox.c.id.in_(row_ids), outbox.c.state == PENDING).values(
            state=DELIVERED, delivered_at=now, answer=answer[:1000], attempts=outbox.c.attempts + 1))


def mark_failed(storage: Storage, row_ids: Sequence[int], error: str) -> None:
    with storage.engine.execution_options(write=True).begin() as tx:
        tx.execute(outbox.update().where(outbox.c.id.in_(row_ids)).values(
            last_error=error[:1000], attempts=outbox.c.attempts + 1))


# --- what the outbox holds, for /metrics and `alerts list` -------------------------------------


@dataclass(frozen=True)
class OutputBacklog:
    pending: int
    oldest_pending: datetime | None
    overflow: int


def backlog(storage: Storage, outputs: Sequence[str]) -> dict[str, OutputBacklog]:
    """Per configured output: pending rows, the oldest pending row's time, overflowed rows."""
    query = (
        sa.select(outbox.c.output, outbox.c.state, sa.func.count(), sa.func.min(outbox.c.created_at))
        .where(outbox.c.state.in_([PENDING, OVERFLOW]), outbox.c.output.in_(list(outputs)))
        .group_by(outbox.c.output, outbox.c.state)
    )
    with storage.engine.connect() as connection:
        rows = connection.execute(query).all()
    found: dict[str, dict[str, Any]] = {name: {"pending": 0, "oldest": None, "overflow": 0} for name in outputs}
    for name, state, count, oldest in rows:
        entry = found[name]
        if state == PENDING:
            entry.update(pending=count, oldest=oldest)
        else:
            entry["overflow"] = count
    return {name: OutputBacklog(e["pending"], e["oldest"], e["overflow"]) for name, e in found.items()}


def orphans(storage: Storage, outputs: Sequence[str]) -> dict[str, int]:
    """Pending alerts of outputs no longer configured (a renamed or removed [[outputs]] table)."""
    query = (
        sa.select(outbox.c.output, sa.func.count())
        .where(outbox.c.state == PENDING, outbox.c.output.not_in(list(outputs)))
        .group_by(outbox.c.output)
    )
    with storage.engine.connect() as connection:
        return {name: int(count) for name, count in connection.execute(query).all()}


def devices_by_verdict(storage: Storage) -> dict[str, int]:
    query = sa.select(verdict_state.c.verdict, sa.func.count()).group_by(verdict_state.c.verdict)
    with storage.engine.connect() as connection:
        counted: dict[str, int] = dict(connection.execute(query).all())
    return {label: int(counted.get(label, 0)) for label in ("clear", "review", "farm")}


class OutboxCollector(Collector):
    """Prometheus collector reading the outbox and verdict labels from the database at scrape time
    (so every replica reports the same shared truth)."""

    def __init__(self, storage: Storage, outputs: Sequence[str], clock: Callable[[], datetime]) -> None:
        self.storage = storage
        self.outputs = tuple(outputs)
        self.clock = clock

    def collect(self) -> Iterator[Any]:
        pending_rows = GaugeMetricFamily("farmwatch_outbox_pending", "Alerts waiting for an output to accept them.",
                                         labels=["output"])
        oldest = GaugeMetricFamily("farmwatch_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest alert still waiting for an output (0 when none waits).",
                                   labels=["output"])
        overflow = CounterMetricFamily("farmwatch_outbox_overflow",
                                       "Alerts not queued because the output's outbox was full (kept, never sent).",
                                       labels=["output"])
        by_verdict = GaugeMetricFamily("farmwatch_devices_by_verdict", "Scored devices by their current verdict.",
                                       labels=["verdict"])
        try:
            found = backlog(self.storage, self.outputs)
            labels = devices_by_verdict(self.storage)
        except Exception:  # noqa: BLE001 - /metrics answers while the store is down (farmwatch_up-style gaps)
            log.warning("cannot read the outbox for /metrics")
            return
        now = self.clock()
        for name, entry in sorted(found.items()):
            pending_rows.add_metric([name], entry.pending)
            age = (now - entry.oldest_pending).total_seconds() if entry.oldest_pending else 0.0
            oldest.add_metric([name], max(age, 0.0))
            overflow.add_metric([name], entry.overflow)
        for label, count in labels.items():
            by_verdict.add_metric([label], count)
        yield from (pending_rows, oldest, overflow, by_verdict)


# --- `farmwatch-collector alerts list` ------------------------------------------------------


def recent(storage: Storage, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` alerts, newest first, each with its delivery state per output."""
    with storage.engine.connect() as connection:
        rows = connection.execute(
            sa.select(alerts.c.alert_id, alerts.c.device_id, alerts.c.verdict, alerts.c.previous_verdict,
                      alerts.c.risk, alerts.c.raised_at, alerts.c.body)
            .order_by(alerts.c.id.desc()).limit(limit)
        ).all()
        ids = [row.alert_id for row in rows]
        deliveries = connection.execute(
            sa.select(outbox.c.alert_id, outbox.c.output, outbox.c.state, outbox.c.attempts, outbox.c.last_error,
                      outbox.c.delivered_at)
            .where(outbox.c.alert_id.in_(ids)).order_by(outbox.c.output)
        ).all() if ids else []
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for item in deliveries:
        by_alert.setdefault(item.alert_id, []).append({
            "output": item.output, "state": item.state, "attempts": item.attempts,
            "last_error": item.last_error, "delivered_at": item.delivered_at,
        })
    return [
        {"alert_id": row.alert_id, "device_id": row.device_id, "hostname": json.loads(row.body)["hostname"],
         "verdict": row.verdict, "previous_verdict": row.previous_verdict, "risk": row.risk,
         "raised_at": row.raised_at, "outputs": by_alert.get(row.alert_id, [])}
        for row in rows
    ]
