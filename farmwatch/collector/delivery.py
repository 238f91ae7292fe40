"""One delivery worker per output: sends the outbox's oldest pending alerts, retries with backoff.

See :mod:`farmwatch.collector.outbox` for the guarantees (order per device, delivered only when
accepted, one sender per output across replicas through a lease, at least once across crashes).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from farmwatch.collector import outbox
from farmwatch.collector.alerts import Alert, AlertRecorder
from farmwatch.collector.outputs import build
from farmwatch.collector.outputs.base import DeliveryFailed, Output, OutputSettings
from farmwatch.collector.storage import Storage

log = logging.getLogger("farmwatch.collector.delivery")
LEASE_SECONDS = 25.0  # outlives one send (HTTP and socket timeouts are 10 s) and lapses soon after a crash
FIRST_RETRY_SECONDS = 0.5


class DeliveryWorker:
    """Sends one output's pending alerts; a daemon thread started by :meth:`start`."""

    def __init__(
        self,
        storage: Storage,
        output: Output,
        deliveries: Counter,
        clock: Callable[[], datetime],
        poll_seconds: float = 0.5,
    ) -> None:
        self.storage = storage
        self.output = output
        self.deliveries = deliveries
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = f"outbox:{output.name}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry_in = 0.0
        self._lease_until: datetime | None = None
        for result in ("accepted", "failed"):
            deliveries.labels(output.name, result)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"farmwatch-outbox-{self.output.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        try:
            self.storage.release_lease(self.lease, self.holder)
        except Exception:  # noqa: BLE001 - shutting down; the lease lapses by itself
            log.warning("could not release the outbox lease of %r; it lapses by itself", self.output.name)
        self.output.close()

    def _loop(self) -> None:
        wait = self.poll_seconds
        while not self._stop.wait(wait):
            try:
                sent = self.step()
            except Exception:  # noqa: BLE001 - a broken store or output must not end delivery
                log.exception("outbox of output %r: delivery step failed; trying again", self.output.name)
                self._back_off()
                sent = 0
            # A backlog drains without pauses; otherwise poll, or wait out the backoff.
            wait = self._retry_in or (0.0 if sent else self.poll_seconds)

    def step(self) -> int:
        """One round: hold the lease, send the oldest pending batch; returns how many were accepted."""
        if not self._hold_lease():
            return 0
        batch = outbox.pending(self.storage, self.output.name, self.output.batch_size)
        if not batch:
            self._retry_in = 0.0
            return 0
        row_ids = [item.row_id for item in batch]
        try:
            answer = self.output.send([Alert.model_validate_json(item.alert_body) for item in batch])
        except DeliveryFailed as refused:
            taken = row_ids[:refused.accepted]
            if taken:  # the receiver took these before it failed: never send them again
                self._delivered(taken, "accepted before a later alert of the batch failed")
            self._failed(row_ids[len(taken):], str(refused))
            return len(taken)
        except Exception as failure:  # noqa: BLE001 - an output bug is a failed delivery, not a dead worker
            log.exception("output %r raised while sending", self.output.name)
            self._failed(row_ids, f"{type(failure).__name__}: {failure}")
            return 0
        self._delivered(row_ids, answer)
        self._retry_in = 0.0
        return len(row_ids)

    def _delivered(self, row_ids: Sequence[int], answer: str) -> None:
        outbox.mark_delivered(self.storage, row_ids, answer, self.clock())
        self.deliveries.labels(self.output.name, "accepted").inc(len(row_ids))

    def _hold_lease(self) -> bool:
        """The output's lease, renewed in the database only once half of it has run out."""
        now = self.clock()
        if self._lease_until is not None and now < self._lease_until - timedelta(seconds=LEASE_SECONDS / 2):
            return True
        if self.storage.take_lease(self.lease, self.holder, now, LEASE_SECONDS):
            self._lease_until = now + timedelta(seconds=LEASE_SECONDS)
            return True
        self._lease_until = None
        return False

    def _failed(self, row_ids: Sequence[int], error: str) -> None:
        self.deliveries.labels(self.output.name, "failed").inc(len(row_ids))
        outbox.mark_failed(self.storage, row_ids, error)
        self._back_off()
        log.warning("output %r did not accept %d alert(s): %s; next try in %.1f s",
                    self.output.name, len(row_ids), error, self._retry_in)

    def _back_off(self) -> None:
        cap = self.output.settings.retry_max_seconds
        self._retry_in = min(cap, max(FIRST_RETRY_SECONDS, self._retry_in * 2))


class Alerting:
    """Everything alerting adds to one collector: the recorder that writes alerts with verdicts, one
    delivery worker per output, and the outbox metrics. ``create_app`` builds it; its lifespan
    starts and stops it."""

    def __init__(
        self,
        storage: Storage,
        outputs: Sequence[OutputSettings],
        public_url: str | None,
        registry: CollectorRegistry,
        clock: Callable[[], datetime],
    ) -> None:
        self.storage = storage
        storage.verdict_listener = AlertRecorder.configured(outputs, public_url)
        deliveries = Counter("farmwatch_alert_deliveries", "Alerts an output accepted or failed to take, by output.",
                             ["output", "result"], registry=registry)
        registry.register(outbox.OutboxCollector(storage, [o.name for o in outputs], clock))
        self.workers = [DeliveryWorker(storage, build(settings), deliveries, clock) for settings in outputs]

    def start(self) -> None:
        names = [worker.output.name for worker in self.workers]
        for name, count in outbox.orphans(self.storage, names).items():
            log.warning("%d alert(s) wait for output %r, which is no longer configured: kept, not sent "
                        "(configure it again under that name to send them)", count, name)
        for worker in self.workers:
            worker.start()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
