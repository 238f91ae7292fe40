"""A store that cannot write (disk full, database gone) is "try again later", never a 500.

An agent treats 503 + ``Retry-After`` as "keep the report in the spool and come back", which is
exactly right when the collector's disk is full: nothing acknowledged is lost, and the reports
arrive once an operator frees space. :class:`StoreHealth` remembers the last full-disk refusal so
``/healthz`` says the collector is degraded until a write succeeds again.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime

import sqlalchemy as sa

DISK_FULL_SQLSTATE = "53100"  # PostgreSQL disk_full (PostgreSQL docs, Appendix A "Error Codes")
RETRY_AFTER_SECONDS = 60.0


def disk_full(failure: BaseException) -> bool:
    """True when ``failure`` says the database's storage is full (SQLite SQLITE_FULL, PostgreSQL 53100)."""
    original = getattr(failure, "orig", failure)
    if isinstance(original, sqlite3.Error):
        # sqlite3 sets sqlite_errorcode (SQLITE_FULL = 13, https://sqlite.org/rescode.html#full);
        # the message is the fallback for drivers that lose it.
        return getattr(original, "sqlite_errorcode", None) == 13 or "disk is full" in str(original)
    return getattr(original, "sqlstate", None) == DISK_FULL_SQLSTATE or "No space left on device" in str(original)


def unavailable(failure: BaseException) -> bool:
    """True for a database failure a client should retry later (full disk, lost connection)."""
    return isinstance(failure, (sa.exc.OperationalError, sa.exc.InterfaceError)) or disk_full(failure)


class StoreHealth:
    """Whether the store refused a write for lack of space since its last successful write."""

    def __init__(self) -> None:
        self._full_since: datetime | None = None
        self._lock = threading.Lock()

    def refused_for_space(self, now: datetime) -> None:
        with self._lock:
            if self._full_since is None:
                self._full_since = now

    def wrote(self) -> None:
        with self._lock:
            self._full_since = None

    def full_since(self) -> datetime | None:
        with self._lock:
            return self._full_since
