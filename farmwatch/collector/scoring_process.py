"""Periodic scoring in child processes of ``serve`` (``[detection] scoring_processes``).

A scoring run is Python work bound to one core (frames, detectors), and in the serving process it
shares one GIL with ingest. With ``scoring_processes = N`` (N >= 1) ``serve`` starts N child
processes, each running the same :class:`farmwatch.collector.scoring.Scorer` loop as a replica
would: each wakes at the interval's tick, claims its own batches of marked devices (``SKIP LOCKED``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), scores and stores them. They are replicas in all but
name, so every guarantee of :mod:`farmwatch.collector.scoring` holds between them as between
collectors: each device scored once per tick, one alert per verdict change (decided in the
verdict's transaction), a dead child's claims lapse and are taken by the others (and the child is
started again, counted in ``farmwatch_scoring_restarts_total``), and the fleet baselines are
refreshed by whichever one holds the ``fleet-baselines`` lease. The serving process keeps its own
scorer for on-demand refreshes only (the analyst API), which claims like any other.

Peak memory is the sum of the processes: each child holds an interpreter with the detectors
(about 0.2 GB) plus the frames of fewer than twice ``[detection] batch_devices`` devices and
the co-location columns of one claimed batch's neighbourhood.

The children's scoring metrics reach the serving process's ``/metrics`` (each sends its samples up
a pipe every second), added to the serving process's own: counters and histograms summed, the
devices claimed right now summed, the other gauges (last success, backlog) the highest value; each
child's share is ``farmwatch_scoring_process_devices_total{process="N"}``.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from farmwatch.collector.alerts import AlertRecorder
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.gc_tuning import settle_long_lived
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.periodic import SupervisedChild, become_child, report_until_stopped
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage

log = logging.getLogger("farmwatch.collector.scoring_process")

SHARED = ("scoring_duration", "scoring_failures", "scoring_device_errors", "scoring_last_success",
          "scoring_devices", "scoring_claimed", "scoring_backlog")
"""The :class:`Metrics` a periodic scoring run moves (on-demand runs, ``scoring_runs_pending``, stay
in the serving process)."""
SUMMED_GAUGES = {"farmwatch_scoring_claimed_devices"}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def run_child(url: str, config: CollectorConfig, index: int, parent: Connection) -> None:
    """One scoring child's whole life: open the store, score every interval, send its scoring metrics
    up until told to stop (or the serving process is gone)."""
    become_child("fw-scoring")
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s:     scoring {index}: %(message)s")
    storage = Storage.open(url, migrate="check")  # the serving process migrated before it started us
    storage.verdict_listener = AlertRecorder.configured(config.outputs, config.public_url)  # alerts with verdicts
    metrics = Metrics(CollectorRegistry(), device_count=lambda: 0)
    scorer = Scorer(storage, config, metrics, utcnow)
    settle_long_lived()
    scorer.start()
    log.info("scoring process %d started (pid %d)", index, os.getpid())
    report_until_stopped(parent, lambda: [family for name in SHARED for family in getattr(metrics, name).collect()],
                         scorer, storage.close)


class ScoringProcess(SupervisedChild):
    """Scoring child number ``index`` (:func:`run_child`), supervised; keeps its last metrics."""

    def __init__(self, url: str, config: CollectorConfig, index: int, restarts: Counter) -> None:
        super().__init__(f"farmwatch-scoring-{index}", run_child, (url, config, index), restarts)
        self.index = index
        self.families: list[Metric] = []

    def received(self, message: Any) -> None:
        self.families = message


class _MergedScoringMetrics(Collector):
    """The serving process's own scoring metrics with every child's added (module docstring)."""

    def __init__(self, metrics: Metrics, children: Sequence[ScoringProcess]) -> None:
        self.metrics = metrics
        self.children = children

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = defaultdict(dict)
        sources = [list(getattr(self.metrics, name).collect()) for name in SHARED]
        sources += [child.families for child in self.children]
        for source in sources:
            for family in source:
                families.setdefault(family.name, family)
                summed = family.type != "gauge" or family.name in SUMMED_GAUGES
                found = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    old = found.get(key)
                    if old is None:
                        found[key] = sample.value
                    elif sample.name.endswith("_created"):  # when the first of them began counting
                        found[key] = min(old, sample.value)
                    else:
                        found[key] = old + sample.value if summed else max(old, sample.value)
        for name, family in families.items():
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            for (sample, labels), value in values[name].items():
                merged.add_sample(sample, dict(labels), value)
            yield merged
        shares = Metric("farmwatch_scoring_process_devices", "Devices each scoring child process claimed and "
                        "scored since it (last) started.", "counter")
        for child in self.children:
            scored = [sample.value for family in child.families for sample in family.samples
                      if sample.name == "farmwatch_scoring_devices_total"]
            shares.add_sample("farmwatch_scoring_process_devices_total", {"process": str(child.index)}, sum(scored))
        yield shares


class ScoringProcesses:
    """``count`` supervised scoring children, started and stopped together, whose scoring metrics are
    served (with the serving process's own) from ``metrics``' registry."""

    def __init__(self, url: str, config: CollectorConfig, metrics: Metrics, count: int) -> None:
        restarts = Counter("farmwatch_scoring_restarts", "Times a scoring child process died and was started again.",
                           registry=metrics.registry)
        self.children = [ScoringProcess(url, config, index, restarts) for index in range(1, count + 1)]
        for name in SHARED:  # served merged with the children's from now on
            metrics.registry.unregister(getattr(metrics, name))
        metrics.registry.register(_MergedScoringMetrics(metrics, self.children))

    def start(self) -> None:
        for child in self.children:
            child.start()

    def stop(self) -> None:
        for child in self.children:
            child.request_stop()  # all of them finish their batch at once, not one after another
        for child in self.children:
            child.stop()
