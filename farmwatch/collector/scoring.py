"""Verdicts for the live collector: the shared detector pipeline run over the stored records.

A background thread re-scores the fleet every ``[detection] interval_seconds`` (one replica at a
time, under a lease in the database). The analyst API also asks for a re-score when a device has a
report newer than its stored verdict. Fleet detectors (shared networks) need every device's records,
so a run always scores the whole lookback window, and on a fleet of a thousand laptops that takes
tens of seconds. So on-demand runs are coalesced (at most one running and one queued, however many
requests ask) and a request waits for one at most ``[detection] refresh_wait_seconds``; past that it
answers with the stored verdicts, marked stale, while the run finishes and stores its verdicts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as Unfinished
from datetime import datetime, timedelta

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.fleet_index import NewestNetworkKind, fleet_rows
from farmwatch.collector.isolation import score_isolated
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.storage import Storage
from farmwatch.contract import Verdict
from farmwatch.detectors.pipeline import score

log = logging.getLogger("farmwatch.collector.scoring")
LEASE = "scoring"


class Scorer:
    """Runs :func:`farmwatch.detectors.pipeline.score` and stores the verdicts; one run at a time."""

    def __init__(
        self, storage: Storage, config: CollectorConfig, metrics: Metrics, clock: Callable[[], datetime]
    ) -> None:
        self.storage = storage
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_demand: ThreadPoolExecutor | None = None
        self._queued: Future[int] | None = None
        self._queue_lock = threading.Lock()
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def run(self) -> int:
        """Score every device with records in the lookback window; returns how many verdicts were stored."""
        with self._lock:
            try:
                return self._run()
            except Exception:
                self.metrics.scoring_failures.inc()
                raise

    def refresh(self, device_id: str | None = None) -> bool:
        """Re-score when ``device_id`` (or, when None, any device) has a report newer than its verdict.

        Returns True when the verdicts are fresh on return, False when the run outlasted
        ``refresh_wait_seconds`` (it goes on and stores its verdicts when done)."""
        if not self._stale(device_id):
            return True
        run = self._coalesced_run(device_id)
        if run is None:
            return True
        try:
            run.result(timeout=self.config.refresh_wait_seconds)
        except Unfinished:
            return not self._stale(device_id)  # an earlier run may have covered it meanwhile
        except Exception:  # noqa: BLE001 - counted in run(); the stored verdicts answer, marked stale
            log.exception("on-demand scoring run failed; answering with the stored verdicts")
            return False
        return True

    def stale_devices(self) -> set[str]:
        """Devices within the lookback whose newest report is not yet behind their verdict."""
        return set(self.storage.stale_devices(self._window_start(self.clock())))

    def _coalesced_run(self, device_id: str | None) -> Future[int] | None:
        """A run that starts after this call, shared with every other request waiting for one."""
        with self._queue_lock:
            queued = self._queued
            if queued is not None and not queued.running() and not queued.done():
                return queued  # not started yet, so it will read every report stored before this call
            if not self._stale(device_id):  # the run that just ended covered it
                return None
            if self._on_demand is None:
                self._on_demand = ThreadPoolExecutor(max_workers=1, thread_name_prefix="farmwatch-rescore")
            self._queued = self._on_demand.submit(self._run_if_stale)
            self.metrics.scoring_pending.inc()
            self._queued.add_done_callback(lambda _: self.metrics.scoring_pending.dec())
            return self._queued

    def _run_if_stale(self) -> int:
        """An on-demand run, skipped when the run before it already covered every report (a queued
        run often is: it was asked for while that one was reading)."""
        return self.run() if self._stale(None) else 0

    def _stale(self, device_id: str | None) -> bool:
        stale = self.storage.stale_devices(self._window_start(self.clock()))
        return bool(stale) if device_id is None else device_id in stale

    def _run(self) -> int:
        started = time.perf_counter()
        # Read the high-water mark first: a report arriving during the run leaves its device stale.
        through = self.storage.last_report_id()
        now = self.clock()
        since = self._window_start(now)
        roster, networks = self.storage.roster(), NewestNetworkKind()
        suppressed = self.storage.suppressed_detectors(now)  # analysts' false positives, still in force
        anchors = self.storage.anchors()

        def score_part(devices: Collection[str] | None) -> list[Verdict]:
            records = self.storage.records(since=since, devices=devices)
            return score(networks.watch(records), roster, anchors, now, self.config.detection, suppressed)

        # One device's records that break a detector cost that device its verdict, not the fleet.
        isolated = score_isolated(
            score_part, lambda: self.storage.devices_with_records(since), roster, now, self.config.detection
        )
        verdicts = isolated.verdicts
        self.storage.save_verdicts(verdicts, through, fleet_rows(verdicts, roster, networks.by_device))
        self.metrics.scoring_device_errors.inc(len(isolated.broken))
        self.metrics.scoring_last_success.set(time.time())
        self.metrics.scoring_duration.observe(time.perf_counter() - started)
        return len(verdicts)

    def _window_start(self, now: datetime) -> datetime:
        return now - timedelta(hours=self.config.lookback_hours)

    def start(self) -> None:
        """Start the periodic background run (a daemon thread, stopped by :meth:`stop`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="farmwatch-scorer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the periodic run and hand the lease over so another replica continues at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._queue_lock:
            if self._on_demand is not None:
                self._on_demand.shutdown(wait=False, cancel_futures=True)
                self._on_demand = None
            try:
                self.storage.release_lease(LEASE, self._holder)
            except Exception:  # noqa: BLE001 - shutting down; the lease lapses on its own
                log.warning("could not release the scoring lease; it lapses by itself")

    def _loop(self) -> None:
        interval = self.config.detection_interval_seconds
        while not self._stop.wait(interval):
            try:
                # One replica scores per interval; the lease outlives a late tick and lapses when
                # its holder stops, so another replica takes over.
                if self.storage.take_lease(LEASE, self._holder, self.clock(), max(3 * interval, 30.0)):
                    self.run()
            except Exception:  # noqa: BLE001 - a failed run must not end periodic scoring
                log.exception("scoring run failed; retrying at the next interval")
