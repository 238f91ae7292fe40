"""One periodic background worker for the collector: a daemon thread that runs a step every interval.

The reducer (:class:`farmwatch.collector.rollups.Reducer`), the retention job
(:class:`farmwatch.collector.retention.RetentionJob`) and the scorer
(:class:`farmwatch.collector.scoring.Scorer`) all derive from :class:`PeriodicWorker`, which owns
what they share: ``start``, ``stop`` (waits for a step in progress to finish), the wait between
steps, and a step that raises is logged (with its traceback) and counted, never ending the thread:
the next step is the retry.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

from prometheus_client import Counter

JOIN_SECONDS = 30.0
"""How long ``stop`` waits for a step in progress (a batch is finished and stored, not cut)."""


class PeriodicWorker(ABC):
    """Calls :meth:`step` in a daemon thread named ``name``: first after ``next_delay(None)``, then
    ``next_delay(seconds the last step took)`` after each step ends (default: ``interval_seconds``
    each time). A step that raises is logged as ``failure_message`` with its traceback and counted in
    ``failures`` (when given); the thread goes on. Steps that loop check :attr:`stopping`."""

    def __init__(self, name: str, interval_seconds: float, failure_message: str,
                 failures: Counter | None = None) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.failure_message = failure_message
        self.failures = failures
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def step(self) -> None:
        """One run of the work."""

    def next_delay(self, last_step_seconds: float | None) -> float:
        """Seconds to wait before the next step (``last_step_seconds`` None: before the first)."""
        return self.interval_seconds

    def before_first_step(self) -> None:
        """Runs once in the thread, before the first wait (default: nothing)."""

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a step that loops ends early."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread (again, after a :meth:`stop`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, letting a step in progress finish (at most ``JOIN_SECONDS``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_SECONDS)
            self._thread = None

    def _run(self) -> None:
        self.before_first_step()
        took: float | None = None
        while not self._stop.wait(self.next_delay(took)):
            started = time.monotonic()
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a failed step must not end the worker; the next one retries
                logging.getLogger(type(self).__module__).exception(self.failure_message)  # the worker's own logger
                if self.failures is not None:
                    self.failures.inc()
            took = time.monotonic() - started
