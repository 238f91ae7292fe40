"""Prometheus metrics of one collector, registered in a registry the caller hands in (no globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector

# Why a report was refused; fixed so dashboards can rely on the label values.
REJECT_REASONS = ("unauthorized", "forbidden", "too_large", "encoding", "invalid", "conflict", "rate_limited", "quota", "unavailable")


class Metrics:
    """The collector's counters, gauges and histograms."""

    def __init__(self, registry: CollectorRegistry, device_count: Callable[[], float]) -> None:
        self.registry = registry
        # The standard process_*, python_info and python_gc_* series, in this registry (not the global one).
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.reports_accepted = Counter(
            "farmwatch_reports_accepted",
            "Reports acknowledged with 202; kind=resend when an identical copy was already stored.",
            ["kind"],
            registry=registry,
        )
        self.reports_rejected = Counter(
            "farmwatch_reports_rejected", "Reports refused, by reason.", ["reason"], registry=registry
        )
        self.enrolments = Counter(
            "farmwatch_enrolments",
            "Enrolment requests: new device, renewal of a known hardware id, refused, or rate_limited (429).",
            ["result"],
            registry=registry,
        )
        self.ingest_latency = Histogram(
            "farmwatch_ingest_latency_seconds",
            "Time from the start of a report request to its answer.",
            registry=registry,
        )
        self.scoring_duration = Histogram(
            "farmwatch_scoring_duration_seconds",
            "Time one scoring run took (a run scores the devices this replica claimed until none were left).",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.scoring_pending = Gauge(
            "farmwatch_scoring_runs_pending",
            "On-demand scoring runs running or queued (at most one of each).",
            registry=registry,
        )
        self.scoring_failures = Counter(
            "farmwatch_scoring_failures",
            "Scoring runs that failed (the devices of the batch that failed keep their previous verdicts, marked stale).",
            registry=registry,
        )
        self.scoring_device_errors = Counter(
            "farmwatch_scoring_device_errors",
            "Devices whose records the detectors could not score in a run, or with stored reports the reducer "
            "refused (each got a verdict of at least review with a scoring_error finding; the rest of the fleet "
            "was scored).",
            registry=registry,
        )
        self.scoring_last_success = Gauge(
            "farmwatch_scoring_last_success_timestamp_seconds",
            "Unix time the last scoring run stored its verdicts (0: none yet in this process).",
            registry=registry,
        )
        self.scoring_devices = Counter(
            "farmwatch_scoring_devices",
            "Devices this replica claimed from the shared work table and scored (replicas share the devices).",
            registry=registry,
        )
        self.scoring_claimed = Gauge(
            "farmwatch_scoring_claimed_devices",
            "Devices this replica holds claimed and is scoring right now.",
            registry=registry,
        )
        self.scoring_backlog = Gauge(
            "farmwatch_scoring_backlog_devices",
            "Devices marked for scoring and not yet scored, on every replica (as of this replica's last run).",
            registry=registry,
        )
        self.store_full_refusals = Counter(
            "farmwatch_store_full_refusals",
            "Requests answered 503 because the database had no space left to write (nothing was stored).",
            registry=registry,
        )
        self.store_full = Gauge(
            "farmwatch_store_full",
            "1 while the database has refused a write for lack of space and no write has succeeded since.",
            registry=registry,
        )
        self.devices = Gauge("farmwatch_devices", "Enrolled devices.", registry=registry)
        self.devices.set_function(device_count)
        for reason in REJECT_REASONS:
            self.reports_rejected.labels(reason)
        for kind in ("new", "resend"):
            self.reports_accepted.labels(kind)
        for result in ("new", "renewal", "refused", "rate_limited"):
            self.enrolments.labels(result)
