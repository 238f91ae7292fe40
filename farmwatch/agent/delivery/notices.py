"""What the agent tells the collector about its own delivery, in its next report's ``errors[]``.

Reports set aside in quarantine, dropped for the spool's bound, or not kept at all (a disk too full
to spool them while the collector could not take them either) must never vanish silently: each is
counted here and named in the ``errors[]`` of the next report that is kept or sent (probe
``"agent"``), then forgotten. The notices are saved in the state dir, so a ``once`` run's notice
reaches the next run. The file is kept at :data:`RESERVED_BYTES` (JSON padded with spaces), so on
a full disk the notices are written over it in place, needing no new block; only when even that
fails do they live in memory (and in the log).
"""

from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from farmwatch.contract import ProbeError

from .spool import Spool
from .state import atomic_write

log = logging.getLogger(__name__)

PROBE = "agent"
MAX_LISTED = 20  # seqs and reasons listed by name; beyond that only counted
RESERVED_BYTES = 16 * 1024  # above the largest notice file: MAX_LISTED reasons of 300 characters and counts


@dataclass
class _Pending:
    set_aside: list[str] = field(default_factory=list)
    set_aside_count: int = 0
    dropped: list[int] = field(default_factory=list)
    dropped_count: int = 0
    not_kept_count: int = 0
    not_kept_first: str | None = None  # window_start of the first report not kept
    not_kept_last: str | None = None  # window_end of the last
    not_kept_why: str = ""


class Notices:
    """Delivery notices waiting for the next report, saved in ``path`` when the disk allows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending = self._load()
        if not path.exists():
            self._save()  # reserve the space while there is some

    def take_from(self, spool: Spool) -> None:
        """Move the reports the spool has just set aside or dropped into the notices."""
        pending = self._pending
        if spool.set_aside or spool.dropped:
            pending.set_aside = (pending.set_aside + spool.set_aside)[:MAX_LISTED]
            pending.set_aside_count += len(spool.set_aside)
            pending.dropped = (pending.dropped + spool.dropped)[:MAX_LISTED]
            pending.dropped_count += len(spool.dropped)
            spool.set_aside, spool.dropped = [], []
            self._save()

    def not_kept(self, window_start: datetime, window_end: datetime, why: str) -> int:
        """A report that could be neither spooled nor sent; the count so far."""
        pending = self._pending
        pending.not_kept_count += 1
        pending.not_kept_first = pending.not_kept_first or window_start.isoformat()
        pending.not_kept_last = window_end.isoformat()
        pending.not_kept_why = why[:300]
        self._save()
        return pending.not_kept_count

    def entries(self) -> list[ProbeError]:
        """The ``errors[]`` entries for the next report (empty when there is nothing to tell)."""
        pending, said = self._pending, []
        if pending.not_kept_count:
            said.append(f"{pending.not_kept_count} report(s) could not be kept (windows {pending.not_kept_first} to "
                        f"{pending.not_kept_last}): neither spooled nor accepted by the collector: "
                        f"{pending.not_kept_why}")
        if pending.dropped_count:
            said.append(f"{pending.dropped_count} report(s) dropped for the spool's bound: seq "
                        f"{', '.join(map(str, pending.dropped))}")
        if pending.set_aside_count:
            said.append(f"{pending.set_aside_count} report(s) set aside in quarantine: "
                        f"{'; '.join(pending.set_aside)}")
        return [ProbeError(probe=PROBE, message=message) for message in said]

    def reported(self) -> None:
        """The entries are in a report the spool or the collector has: forget them."""
        if self._pending != _Pending():
            self._pending = _Pending()
            self._save()

    def _load(self) -> _Pending:
        try:
            return _Pending(**json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return _Pending()
        except (OSError, ValueError, TypeError, RecursionError) as bad:  # damaged: say so, start afresh
            log.warning("ignoring unreadable %s: %s", self.path, bad)
            return _Pending()

    def _save(self) -> None:
        data = json.dumps(asdict(self._pending)).encode().ljust(RESERVED_BYTES)
        try:
            atomic_write(self.path, data)
        except OSError as full:
            try:
                self._overwrite(data)
            except OSError as failed:
                log.warning("cannot save delivery notices (%s, then %s); keeping them in memory",
                            full.strerror or full, failed.strerror or failed)

    def _overwrite(self, data: bytes) -> None:
        """Write over the reserved file in place: its blocks are allocated, a full disk cannot refuse them."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if os.fstat(fd).st_size < len(data):
                raise OSError(errno.ENOSPC, "the reserved notices file is too small")
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
