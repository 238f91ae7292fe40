"""The spool: reports waiting for the collector, one file per seq, and the quarantine beside it.

Every report is written here (atomically, named by its seq) before any attempt to send it. A file
that cannot be read back safely — not a regular file, larger than any report the agent writes,
not UTF-8, not JSON, JSON nested deeper than the parser's recursion limit, not an object — is never
retried: :meth:`Spool.read` says why and the caller moves it to ``quarantine/`` with that reason
beside it (``<seq>.response.json``), so nothing behind it waits on it.

The spool is bounded (:data:`MAX_SPOOL_REPORTS`, :data:`MAX_SPOOL_BYTES`): about a month of
five-minute reports. Only beyond that are the oldest reports dropped, each named in a log line and
listed in :attr:`Spool.dropped`, as quarantined ones are in :attr:`Spool.set_aside` (the agent
names both in its next report's ``errors[]``). The
quarantine keeps the latest :data:`MAX_QUARANTINED_REPORTS` (a collector that rejects every report
must not fill the disk), dropping older ones the same way.

Writes that are not needed for correctness (the quarantine's reason file, a report restamped with a
new device id, the failure counts) are best effort: on a full disk the delivery goes on without them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from farmwatch.contract import INT_LIMIT
from farmwatch.errors import FarmwatchError

from .state import atomic_write, fsync_dir

log = logging.getLogger(__name__)

MAX_SPOOL_REPORTS = 10_000  # 34 days of reports at the default 5-minute interval
MAX_SPOOL_BYTES = 256 * 1024 * 1024
MAX_QUARANTINED_REPORTS = 1_000
MAX_REPORT_FILE_BYTES = 4 * 1024 * 1024
"""Four times the collector's default ``max_report_bytes``; the agent's own reports are a few KB,
so a bigger file is not one it wrote and is set aside unread (reading it could exhaust memory)."""
FAILURES_FILE = "failed-attempts"  # JSON {seq: failed attempts}; not named like a report, so pending() skips it
_REPORT_NAME = re.compile(r"[0-9]+\.json")  # temp files start with a dot; answers end .response.json


class UnreadableReport(FarmwatchError, ValueError):
    """A spooled file that can never be sent; the message says why."""


def _reports(folder: Path) -> list[Path]:
    """The report files in ``folder``, lowest seq first."""
    return sorted((p for p in folder.iterdir() if _REPORT_NAME.fullmatch(p.name)), key=lambda p: int(p.stem))


def _report_path(folder: Path, seq: int) -> Path:
    return folder / f"{seq:012d}.json"


class Spool:
    """A folder of reports waiting for the collector, one file per seq."""

    def __init__(
        self,
        folder: Path,
        quarantine: Path,
        max_reports: int = MAX_SPOOL_REPORTS,
        max_bytes: int = MAX_SPOOL_BYTES,
        max_quarantined: int = MAX_QUARANTINED_REPORTS,
    ) -> None:
        self.folder = folder
        self.quarantine_folder = quarantine
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.max_quarantined = max_quarantined
        self.dropped: list[int] = []  # seqs dropped for the bound, until the agent takes them as notices
        self.set_aside: list[str] = []  # "seq N: why" of each quarantined report, likewise
        self._unsaved_failures: dict[str, int] = {}  # failure counts a full disk kept from failures.json

    def put(self, seq: int, body: bytes) -> Path:
        """Store a report durably (temp file, fsync, rename), then enforce the bound.

        Raises :class:`OSError` (e.g. ENOSPC) with nothing left behind when it cannot be stored.
        """
        path = _report_path(self.folder, seq)
        atomic_write(path, body)
        self._enforce_bound()
        return path

    def pending(self) -> list[Path]:
        """Spooled reports, lowest seq first."""
        return _reports(self.folder)

    def highest_seq(self) -> int:
        """The highest seq named in the spool (0 if none): new seqs must start above it.

        Names past the contract's seq range are not reports the agent wrote (it never numbers one
        there) and are left to quarantine rather than push the counter out of range.
        """
        return max((seq for seq in map(int, (p.stem for p in self.pending())) if seq < INT_LIMIT), default=0)

    def read(self, path: Path) -> dict[str, Any]:
        """The spooled report as a JSON object; raises :class:`UnreadableReport` saying why not.

        Opened without following symlinks and without blocking (a FIFO named like a report must not
        hang the agent), size checked before reading, parse failures of every kind caught.
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError as failed:
            raise UnreadableReport(f"cannot open it: {failed.strerror or failed}") from failed
        with os.fdopen(fd, "rb") as handle:
            facts = os.fstat(handle.fileno())
            if not stat.S_ISREG(facts.st_mode):
                raise UnreadableReport("not a regular file")
            if facts.st_size > MAX_REPORT_FILE_BYTES:
                raise UnreadableReport(f"{facts.st_size} bytes, over the {MAX_REPORT_FILE_BYTES} a report can have")
            try:
                body = handle.read(MAX_REPORT_FILE_BYTES + 1)
            except OSError as failed:
                raise UnreadableReport(f"cannot read it: {failed.strerror or failed}") from failed
        if len(body) > MAX_REPORT_FILE_BYTES:  # grew while we looked
            raise UnreadableReport(f"over the {MAX_REPORT_FILE_BYTES} bytes a report can have")
        try:
            report = json.loads(body)
        except RecursionError:  # e.g. 100,000 nested arrays: CPython's decoder gives up, the agent must not
            raise UnreadableReport("not a JSON report: nested deeper than the JSON parser's recursion limit") from None
        except (ValueError, MemoryError) as bad:  # ValueError covers JSONDecodeError and UnicodeDecodeError
            raise UnreadableReport(f"not a JSON report: {type(bad).__name__}: {bad}") from None
        if not isinstance(report, dict):
            raise UnreadableReport(f"not a JSON report: a JSON {type(report).__name__}, not an object")
        return report

    def rewrite(self, path: Path, body: bytes) -> None:
        """Replace a spooled report's content (restamped); kept as it was when the disk is full."""
        try:
            atomic_write(path, body)
        except OSError as failed:
            log.warning("could not restamp %s (%s); sending the restamped copy from memory", path.name,
                        failed.strerror or failed)

    def renumber(self, path: Path, seq: int) -> Path:
        """Give a spooled report a new seq by renaming it (needs no free space; the caller restamps it)."""
        target = _report_path(self.folder, seq)
        os.replace(path, target)
        fsync_dir(self.folder)
        self._forget_failures(int(path.stem))
        return target

    def quarantine(self, path: Path, status: int | None, answer: str) -> Path:
        """Move a report aside with the collector's answer (or why it cannot be sent) next to it."""
        target = self.quarantine_folder / path.name
        try:
            body: object = json.loads(answer)
        except ValueError:
            body = answer
        shutil.move(path, target)  # a rename on the same file system: works on a full disk too
        self._forget_failures(int(path.stem))
        self.set_aside.append(f"seq {int(path.stem)}: " + (f"HTTP {status}" if status else answer)[:300])
        try:
            atomic_write(
                self.quarantine_folder / f"{path.stem}.response.json",
                json.dumps({"status": status, "answer": body}, indent=1).encode(),
            )
        except OSError as failed:
            log.warning("quarantined %s without its reason file (%s): %s", path.name, failed.strerror or failed, body)
        for dropped in _reports(self.quarantine_folder)[:-self.max_quarantined]:
            _remove(dropped)
            (dropped.parent / f"{dropped.stem}.response.json").unlink(missing_ok=True)
            log.warning("quarantine keeps its last %d reports: dropped seq %d", self.max_quarantined,
                        int(dropped.stem))
        return target

    def count_failure(self, seq: int) -> int:
        """Count one more failed attempt for ``seq`` (kept across runs when the disk allows); the new total."""
        counts = self._read_failures()
        counts[str(seq)] = counts.get(str(seq), 0) + 1
        self._write_failures(counts)
        return counts[str(seq)]

    def forget(self, path: Path) -> None:
        """A delivered report leaves the spool."""
        path.unlink()
        self._forget_failures(int(path.stem))

    def _forget_failures(self, seq: int) -> None:
        counts = self._read_failures()
        if counts.pop(str(seq), None) is not None:
            self._write_failures(counts)

    def _read_failures(self) -> dict[str, int]:
        try:
            loaded = json.loads((self.folder / FAILURES_FILE).read_bytes())
        except (OSError, ValueError):
            return self._unsaved_failures
        if not isinstance(loaded, dict):
            return self._unsaved_failures
        return {str(k): v for k, v in loaded.items() if isinstance(v, int)} | self._unsaved_failures

    def _write_failures(self, counts: dict[str, int]) -> None:
        try:
            atomic_write(self.folder / FAILURES_FILE, json.dumps(counts).encode())
            self._unsaved_failures = {}
        except OSError:
            self._unsaved_failures = counts  # a full disk: count in memory for this process

    def _enforce_bound(self) -> None:
        files = self.pending()
        sizes = [f.lstat().st_size for f in files]  # a planted dangling symlink must not fail the put
        total = sum(sizes)
        while files and (len(files) > self.max_reports or total > self.max_bytes):
            oldest = files.pop(0)
            total -= sizes.pop(0)
            oldest.unlink()
            self.dropped.append(int(oldest.stem))
            log.warning(
                "spool over its bound (%d reports / %d bytes): dropped the oldest report, seq %s",
                self.max_reports, self.max_bytes, int(oldest.stem),
            )


def _remove(path: Path) -> None:
    """Delete a quarantined entry, a file or (set aside because it was one) a folder."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
