"""Per-address rate limits (enrolment, failed authentication): token buckets in this process's memory.

These guard against guessing and floods from one source address; they are per collector process
(a guesser spread over N replicas gets N times the budget, still a crawl), which the README says.
Per-device quotas, which must hold across replicas, live in the database (:mod:`quotas`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_TRACKED = 100_000
"""Addresses remembered at most; beyond it, buckets that have refilled are forgotten first."""


class AddressLimiter:
    """A token bucket per address: ``per_minute`` tokens, refilled evenly over a minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.refill_per_second)

    def wait(self, address: str) -> float | None:
        """Seconds until ``address`` has a token again, or None when it has one now (nothing spent)."""
        with self._lock:
            tokens = self._tokens(address, self.clock())
        return None if tokens >= 1 else (1 - tokens) / self.refill_per_second

    def spend(self, address: str) -> float | None:
        """Spend a token of ``address``; None when there was one, else seconds until there is."""
        with self._lock:
            now = self.clock()
            tokens = self._tokens(address, now)
            if tokens < 1:
                return (1 - tokens) / self.refill_per_second
            self._buckets[address] = (tokens - 1, now)
            if len(self._buckets) > MAX_TRACKED:
                self._forget_full(now)
            return None

    def _forget_full(self, now: float) -> None:
        for address in [a for a in self._buckets if self._tokens(a, now) >= self.capacity]:
            del self._buckets[address]
