"""The rollups reducer (:class:`farmwatch.collector.rollups.Reducer`) in a process of its own, beside ``serve``.

Reduction is Python work (parse each stored report, reduce it, file rollups and sightings). In the
serving process it shared one GIL with ingest: under load, py-spy ``--gil`` gave it a quarter of
that process's GIL time, so ingest ran slower by about as much (issue 13). A child process runs it
on another core. What stays the same: exactly-once filing (the reducer's progress and markers live in
the database, so any number of reducers, on any replica, file each report once), the scorer's own
reduction before it reads, and the reducer's metrics on the serving process's ``/metrics`` (the
child sends its registry's samples up a pipe every second).

The child runs at :data:`NICENESS`: when the cores are busy, the serving process answers agents
first and reduction, which can wait, catches up when ingest idles (scoring reduces what is left
before it reads). On PostgreSQL the reducer takes row locks that ingest never waits for. On SQLite
it holds the one write lock every report's commit waits for only to write a batch it reduced
beforehand (:func:`farmwatch.collector.rollups.reduce_pending`), a few tens of milliseconds, so
descheduling it there costs ingest less than its Python work on the cores did: back to back,
``bench/collector_ingest.py --store sqlite``'s p99 at 500 reports/s was 0.88 and 0.94 s niced
against 2.7 and 2.1 s not (load 5.6-7.4). Before, it reduced while holding that lock, and was not
niced on SQLite.

The serving process supervises the child: one that exits or is killed is started again after
``RESTART_SECONDS`` (logged and counted in ``farmwatch_reducer_restarts_total``), and the child
stops when the serving process stops or dies (it watches the pipe).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from farmwatch.collector.gc_tuning import settle_long_lived
from farmwatch.collector.periodic import SupervisedChild, become_child, report_until_stopped


NICENESS = 10
"""Added to the child's nice value: under contention Linux gives a nice-10 process about
a tenth of a nice-0 one's CPU share (sched(7)); on an idle core it runs at full speed."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def run_child(url: str, lookback_hours: float, parent: Connection) -> None:
    """The child's whole life: open the store, reduce in the background, report metrics until told to stop."""
    from farmwatch.collector.rollups import Reducer  # the child imports the reduction, the parent need not
    from farmwatch.collector.storage import Storage

    become_child("fw-reducer")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     reducer: %(message)s")
    storage = Storage.open(url, migrate="check")  # the serving process migrated before it started us
    os.nice(NICENESS)
    registry = CollectorRegistry()
    reducer = Reducer(storage, utcnow, registry, lookback_hours)
    settle_long_lived()
    reducer.start()
    report_until_stopped(parent, lambda: list(registry.collect()), reducer, storage.close)


class _ChildMetrics(Collector):
    """The child's last reported metric families, served from the parent's registry."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class ReducerProcess(SupervisedChild):
    """Runs :func:`run_child` in a supervised child process (:class:`farmwatch.collector.periodic.SupervisedChild`:
    started again ``RESTART_SECONDS`` after it exits) and serves the metrics it sends up."""

    def __init__(self, url: str, lookback_hours: float, registry: CollectorRegistry) -> None:
        super().__init__("farmwatch-reducer", run_child, (url, lookback_hours), Counter(
            "farmwatch_reducer_restarts", "Times the reducer's child process died and was started again.",
            registry=registry))
        self._metrics = _ChildMetrics()
        registry.register(self._metrics)

    def received(self, message: Any) -> None:
        self._metrics.families = message
