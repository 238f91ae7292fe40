"""What one collector process remembers to admit or refuse a report before the store is asked.

Every report's write re-checks both facts inside the transaction that stores it (the token is
still live, the device's quota has room: :func:`farmwatch.collector.storage.store_report_batch`), so
what is remembered here only decides how early a request is answered, never what is stored:

- :class:`TokenMemory`: device tokens seen live (or issued here, by enrolment or rotation) in the
  last ``ttl`` seconds, so a report does not cost a token query before its body is read. A token revoked meanwhile (``farmwatch-collector
  revoke``, a rotation on another replica) still has its report parsed, then refused with 401 by
  the write. Only the report endpoint uses it; every other device call asks the database.
- :class:`SpentQuotas`: devices whose quota the last commit found spent, until the period ends, so
  their next reports are refused (429) before the body is read. A device that spent its quota
  through another replica is refused by the write on its first report here, then early.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

TOKEN_TTL_SECONDS = 3600.0
"""How long a token the database called live is remembered. Longer than agents' report interval
(300 s by default): with 60 s every report paid the lookup (a thread-pool hop, a pooled connection
and a query: about 290 us of CPU, as much as a third of a report's, issue 13); now one in twelve
does. It decides nothing stored: a token revoked meanwhile has one report parsed, refused by the
write (401), and is forgotten here then."""
MAX_REMEMBERED = 100_000  # beyond it, everything is forgotten at once (then relearnt one query each)


class TokenMemory:
    """token SHA-256 -> device id, for tokens the database called live (or this process issued) within
    the last ``ttl`` seconds."""

    def __init__(self, ttl: float = TOKEN_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._seen: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def device(self, token_sha256: str) -> str | None:
        with self._lock:
            found = self._seen.get(token_sha256)
            if found is None:
                return None
            if found[1] <= self.clock():
                del self._seen[token_sha256]
                return None
            return found[0]

    def remember(self, token_sha256: str, device_id: str) -> None:
        with self._lock:
            if len(self._seen) >= MAX_REMEMBERED:
                self._seen.clear()
            self._seen[token_sha256] = (device_id, self.clock() + self.ttl)

    def forget_device(self, device_id: str) -> None:
        """Drop every token of ``device_id`` (its tokens changed in this process)."""
        with self._lock:
            for token in [t for t, (device, _) in self._seen.items() if device == device_id]:
                del self._seen[token]


class SpentQuotas:
    """device id -> the time its spent quota refills, as the last commit that stored its report found it."""

    def __init__(self) -> None:
        self._until: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def wait(self, device_id: str, now: datetime) -> float | None:
        """Seconds until ``device_id`` may store again, or None when no commit here found its quota spent."""
        with self._lock:
            until = self._until.get(device_id)
            if until is None:
                return None
            if until <= now:
                del self._until[device_id]
                return None
            return (until - now).total_seconds()

    def spent(self, device_id: str, now: datetime, seconds: float | None) -> None:
        """Record what a commit found: spent for ``seconds`` more, or (None) room for another report."""
        with self._lock:
            if seconds is None:
                self._until.pop(device_id, None)
                return
            if len(self._until) >= MAX_REMEMBERED:
                self._until.clear()
            self._until[device_id] = now + timedelta(seconds=seconds)
