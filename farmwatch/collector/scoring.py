"""Verdicts for the live collector, scored by whichever replicas share the database.

Every replica runs the same loop. At each multiple of ``[detection] interval_seconds`` (wall-clock
aligned, so replicas wake together) it reduces the reports still pending into rollups, marks the
devices whose rollups or network sightings changed, or whose windows left the lookback (a quiet
device's verdict decays; :mod:`farmwatch.collector.scoring_work`), then
claims a batch of ``[detection] batch_devices`` marked devices, scores them from their rollups
(:func:`farmwatch.collector.incremental.score_devices`: their co-location neighbourhood is read
alongside), stores their verdicts and releases the claim in one transaction (alerts are decided
there too, :mod:`farmwatch.collector.alerts`), and claims again until none are left. Claims are
disjoint (``SKIP LOCKED``), so N replicas split the work; a device marked after claiming began waits
for the next tick, so a change is scored once. No replica is special: a dead one's claims lapse and
the others take them.

The fleet baselines (input rhythm, the anomaly model) are refreshed on their slower cadence
(``incremental.BASELINE_MAX_AGE``) by one replica, the one holding the ``fleet-baselines`` lease,
beside its scoring runs (:class:`BaselineKeeper`, ahead of their expiry), so no interval's run
waits for a refresh; every run scores with the stored ones.

The analyst API asks for an on-demand run when a device has a report newer than its stored verdict:
that run claims everything marked, right away. On-demand runs are coalesced (at most one running
and one queued, however many requests ask) and a request waits for one at most
``[detection] refresh_wait_seconds``; past that it answers with the stored verdicts, marked stale,
while the run finishes and stores its verdicts.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as Unfinished
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.fleet_index import fleet_rows
from farmwatch.collector.incremental import (
    Baselines, FleetReads, baselines_fresh, current_baselines, load_baselines, refresh_baselines, score_devices,
)
from farmwatch.collector.isolation import score_isolated
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.periodic import PeriodicWorker
from farmwatch.collector.rollups import aged_out_devices, catch_up, changed_devices, neighbours
from farmwatch.collector.scoring_work import Claim
from farmwatch.collector.storage import Storage
from farmwatch.contract import Verdict

log = logging.getLogger("farmwatch.collector.scoring")
MIN_CLAIM_SECONDS = 60.0
"""A claim outlives a slow batch; a dead replica's claims lapse after this (or two intervals)."""
BASELINES_LEASE = "fleet-baselines"
KEEPER_CHECK_SECONDS = 60.0
"""How often the baselines keeper renews its lease and looks at the baselines' age."""
REFRESH_AHEAD = timedelta(minutes=15)
"""How long before ``BASELINE_MAX_AGE`` the keeper refreshes the baselines (a refresh at 20,000
laptops takes minutes)."""


@dataclass
class ScoredBatch:
    """What scoring a set of devices produced: verdicts, their fleet-index rows, and the devices the
    detectors could not score or with reports the reducer refused (each also has a verdict of at
    least review, with a scoring_error finding, in ``verdicts``)."""

    verdicts: list[Verdict]
    fleet: list[dict[str, Any]]
    broken: dict[str, str] = field(default_factory=dict)


def score_claimed(storage: Storage, config: CollectorConfig, devices: Sequence[str], now: datetime,
                  fleet_reads: FleetReads, baselines: Baselines,
                  neighbourhood: Collection[str] | None = None) -> ScoredBatch:
    """``devices``' verdicts from their rollups (:func:`farmwatch.collector.incremental.score_devices`),
    with what the run read of the whole fleet (``fleet_reads``: the roster, the fleet's newest window end),
    as reduced so far: the run reduces pending reports before its first batch, not before each.

    Devices whose windows break the detectors get a review verdict of their own
    (:mod:`farmwatch.collector.isolation`); the others are scored together. ``neighbourhood``: the
    devices' co-location neighbourhood when the caller read it (the scorer does, to claim it), so
    it is not read twice; a part of ``devices`` scored apart reads its own."""
    kinds: dict[str, str] = {}
    refused: dict[str, str] = {}

    def score_part(part: Collection[str] | None) -> list[Verdict]:
        scored = score_devices(storage, devices if part is None else part, now, config, baselines, fleet_reads,
                               reduce_first=False,  # the run reduced before its first batch
                               neighbourhood=neighbourhood if part is None else None)
        kinds.update(scored.network_kinds)
        refused.update(scored.refused)
        return scored.verdicts

    roster = fleet_reads.roster_of(devices)
    isolated = score_isolated(score_part, lambda: devices, roster, now, config.detection)
    return ScoredBatch(isolated.verdicts, fleet_rows(isolated.verdicts, roster, kinds), {**refused, **isolated.broken})


class Scorer(PeriodicWorker):
    """Claims, scores and stores verdicts for this replica's share of the marked devices: every
    ``[detection] interval_seconds`` in the background once started, and on demand (:meth:`refresh`)."""

    def __init__(
        self, storage: Storage, config: CollectorConfig, metrics: Metrics, clock: Callable[[], datetime]
    ) -> None:
        # A failed run is counted by run() itself (on-demand runs too), so the worker counts nothing.
        super().__init__("farmwatch-scorer", config.detection_interval_seconds,
                         "scoring run failed; retrying at the next interval")
        self.storage = storage
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._on_demand: ThreadPoolExecutor | None = None
        self._queued: Future[int] | None = None
        self._queue_lock = threading.Lock()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.keeper = BaselineKeeper(self)

    def run(self, bounded: bool = False) -> int:
        """Reduce, mark, then claim and score marked devices until none are left (``bounded``: only
        those marked before claiming began); returns how many verdicts were stored. A run that found
        nothing to claim is not timed (``farmwatch_scoring_duration_seconds`` counts runs that scored
        something)."""
        with self._lock:
            started = time.perf_counter()
            try:
                claimed, stored = self._drain(bounded)
            except Exception:
                self.metrics.scoring_failures.inc()
                raise
            self.metrics.scoring_last_success.set(time.time())
            if claimed:
                self.metrics.scoring_duration.observe(time.perf_counter() - started)
            return stored

    def refresh(self, device_id: str | None = None) -> bool:
        """Re-score when ``device_id`` (or, when None, any device) has a report newer than its verdict.

        Returns True when the verdicts are fresh on return, False when scoring outlasted
        ``refresh_wait_seconds`` (it goes on and stores its verdicts when done)."""
        deadline = time.monotonic() + self.config.refresh_wait_seconds
        while self._stale(device_id):
            run = self._coalesced_run(device_id)
            if run is not None:
                try:
                    run.result(timeout=max(deadline - time.monotonic(), 0))
                except Unfinished:
                    return not self._stale(device_id)  # an earlier run may have covered it meanwhile
                except Exception:  # noqa: BLE001 - counted in run(); the stored verdicts answer, marked stale
                    log.exception("on-demand scoring run failed; answering with the stored verdicts")
                    return False
                if device_id is None:
                    return True  # a busy fleet is never all fresh at once: one run over what was stale is enough
            if time.monotonic() >= deadline:
                return False
            if self._stale(device_id):
                time.sleep(0.1)  # another replica holds the device's claim: its verdict lands soon
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
        if not self._stale(None):
            return 0
        # Stale devices nobody marked (a roster import, an analyst's action) are marked here.
        self.storage.mark_stale_for_scoring(self._window_start(self.clock()), self.clock())
        return self.run()

    def _stale(self, device_id: str | None) -> bool:
        stale = self.storage.stale_devices(self._window_start(self.clock()))
        return bool(stale) if device_id is None else device_id in stale

    def _drain(self, bounded: bool) -> tuple[int, int]:
        """(devices claimed, verdicts stored) of one run; ``bounded``: only devices marked before it
        started claiming (the periodic tick)."""
        now = self.clock()
        # Read the high-water mark before reducing: a report stored after it leaves its device's
        # verdict stale and is marked by a later run, so it is scored once more.
        through = self.storage.last_report_id()
        catch_up(self.storage, now, self._window_start(now))  # a first run skips reports scoring never reads
        self.storage.mark_changed(lambda since: changed_devices(self.storage, since), now)
        self.storage.mark_aged_out(lambda after, last: aged_out_devices(self.storage, after, last),
                                   self._window_start(now), now)
        baselines = self._baselines(now)
        if baselines is None:
            log.info("no fleet baselines yet; the replica that keeps them is computing them")
            return 0, 0
        dirtied_by = self.clock() if bounded else None
        fleet_reads = FleetReads.read(self.storage, self._window_start(now))  # once per run, not per batch
        claimed = stored = 0
        hold = max(MIN_CLAIM_SECONDS, 2 * self.config.detection_interval_seconds)
        while not self.stopping:
            claim = self.storage.claim_scoring(self.holder, self.clock(), hold, self.config.batch_devices, dirtied_by)
            if not claim.devices:
                break
            claim, neighbourhood = self._with_neighbours(claim, hold, dirtied_by)
            self.metrics.scoring_claimed.set(len(claim.devices))
            try:
                batch = score_claimed(self.storage, self.config, claim.devices, now, fleet_reads, baselines, neighbourhood)
                self.storage.save_verdicts(batch.verdicts, through, batch.fleet, claim, self.clock())
            except Exception:
                self._give_back(claim)
                raise
            finally:
                self.metrics.scoring_claimed.set(0)
            self.metrics.scoring_devices.inc(len(claim.devices))
            claimed += len(claim.devices)
            self.metrics.scoring_device_errors.inc(len(batch.broken))
            stored += len(batch.verdicts)
            give_back_freed_memory()  # the batch's frames are gone: the next batch starts as small as this one
        self.metrics.scoring_backlog.set(self.storage.scoring_backlog())
        return claimed, stored

    def _with_neighbours(self, claim: Claim, hold: float, dirtied_by: datetime | None) -> tuple[Claim, set[str]]:
        """``claim`` and the marked devices of its co-location neighbourhood that nobody holds (as the
        claim would take them: not marked after ``dirtied_by``), and that neighbourhood (also the
        neighbourhood of the grown claim, which the batch loads). Scoring a batch judges co-location
        on its whole neighbourhood, so a neighbour's verdict from this batch is exactly its own
        batch's would be; claimed here it is stored here, instead of its neighbourhood read and
        judged again for a batch of its own (on 1,000 laptops, batches of 100 read 78 % more devices than
        they claimed, batches of 500 18 %)."""
        neighbourhood = neighbours(self.storage, claim.devices)
        around = neighbourhood - set(claim.devices)
        if not around:
            return claim, neighbourhood
        extra = self.storage.claim_scoring(self.holder, self.clock(), hold, len(around), dirtied_by, among=around)
        return Claim(claim.holder, claim.devices + extra.devices, claim.until), neighbourhood

    def _baselines(self, now: datetime) -> Baselines | None:
        """The fleet baselines this run scores with: the stored ones. They are refreshed beside the
        runs, ahead of their expiry, by the :class:`BaselineKeeper` of the replica holding the
        baselines lease; a run refreshes them itself only when none are stored, they were learned
        under another detection config, or they are past ``BASELINE_MAX_AGE`` (the keeper fell
        behind), and only on the lease's holder (renewed by every run and keeper step, so it lapses
        soon after its holder stops). The other replicas score nothing until the first ones are stored."""
        holder = self.storage.take_lease(BASELINES_LEASE, self.holder, now, self.lease_seconds)
        stored = load_baselines(self.storage)
        if holder and (stored is None or not baselines_fresh(stored, now, self.config)):
            return current_baselines(self.storage, now, self.config)
        return stored

    @property
    def lease_seconds(self) -> float:
        """How long the baselines lease outlives its holder's last run or keeper step."""
        return max(MIN_CLAIM_SECONDS, 3 * self.config.detection_interval_seconds)

    def _give_back(self, claim: Claim) -> None:
        try:
            self.storage.release_claim(claim, self.clock())
        except Exception:  # noqa: BLE001 - the database may be what failed; the claim lapses by itself
            log.warning("could not release %d claimed devices; their claim lapses by itself", len(claim.devices))

    def _window_start(self, now: datetime) -> datetime:
        return now - timedelta(hours=self.config.lookback_hours)

    def start(self) -> None:
        """Start the periodic runs and, beside them, the baselines keeper."""
        super().start()
        self.keeper.start()

    def stop(self) -> None:
        """Stop the periodic run (a batch being scored is finished and stored first) and the keeper,
        and hand the fleet baselines over to another replica."""
        self.keeper.request_stop()
        super().stop()
        self.keeper.stop()
        with self._queue_lock:
            if self._on_demand is not None:
                self._on_demand.shutdown(wait=False, cancel_futures=True)
                self._on_demand = None
        try:  # another replica keeps the fleet baselines from its next run on
            self.storage.release_lease(BASELINES_LEASE, self.holder)
        except Exception:  # noqa: BLE001 - shutting down; the lease lapses on its own
            log.warning("could not release the fleet baselines lease; it lapses by itself")

    def before_first_step(self) -> None:
        try:  # devices left stale by an older collector or a crash before they were marked
            self.storage.mark_stale_for_scoring(self._window_start(self.clock()), self.clock())
        except Exception:  # noqa: BLE001 - the on-demand path marks them too
            log.exception("could not mark the stale devices for scoring")

    def step(self) -> None:
        self.run(bounded=True)

    def next_delay(self, last_step_seconds: float | None) -> float:
        return _until_next_tick(self.interval_seconds)


class BaselineKeeper(PeriodicWorker):
    """Refreshes the fleet baselines beside a scorer's runs, not inside one: every
    ``KEEPER_CHECK_SECONDS`` it takes (or renews) the baselines lease under the scorer's holder name
    and, holding it, refreshes the stored baselines once they are within ``REFRESH_AHEAD`` of
    ``BASELINE_MAX_AGE``. At 20,000 laptops a refresh reads every device's rollups (minutes); done
    here, no interval's scoring waits for it, and the stored baselines stay younger than
    ``BASELINE_MAX_AGE`` (what :mod:`farmwatch.collector.incremental` promises) as long as a refresh
    takes less than ``REFRESH_AHEAD`` minus one check."""

    def __init__(self, scorer: Scorer) -> None:
        super().__init__("farmwatch-baselines", min(KEEPER_CHECK_SECONDS, scorer.config.detection_interval_seconds),
                         "refreshing the fleet baselines failed; retrying at the next check")
        self.scorer = scorer

    def step(self) -> None:
        scorer = self.scorer
        now = scorer.clock()
        if not scorer.storage.take_lease(BASELINES_LEASE, scorer.holder, now, scorer.lease_seconds):
            return
        stored = load_baselines(scorer.storage)
        if stored is None or not baselines_fresh(stored, now, scorer.config, ahead=REFRESH_AHEAD):
            # Held through the refresh (it outlasts the lease's usual length at scale), so no other
            # replica starts one meanwhile; should this process die, another takes over after it.
            scorer.storage.take_lease(BASELINES_LEASE, scorer.holder, now, REFRESH_AHEAD.total_seconds())
            refresh_baselines(scorer.storage, now, scorer.config)
            give_back_freed_memory()


def give_back_freed_memory() -> None:
    """Return the heap pages a batch's frames freed to the system (glibc's ``malloc_trim``; elsewhere
    nothing). glibc keeps freed memory in its arenas, and a batch's frames leave them fragmented: on
    1,000 laptops × 72 h, batches of 500, the process kept about 175 MB more after each batch than
    it used, which made its peak grow with the fleet (0.72 GB at 1,000 laptops, 1.14 GB at 5,000).
    Trimming after each batch leaves the peak at one batch's frames."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim  # noqa: B018 - present on glibc only
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def _until_next_tick(interval: float) -> float:
    """Seconds to the next multiple of ``interval`` since the epoch: every replica ticks together."""
    now = time.time()
    return max(math.floor(now / interval + 1) * interval - now, 0.001)
