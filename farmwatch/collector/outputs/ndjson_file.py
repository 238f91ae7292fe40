"""Append-only NDJSON files that rotate by size, for shippers that tail files (Filebeat, Elastic
Agent, Fluent Bit, Vector): ``alerts.ndjson`` grows to ``max_bytes``, then becomes ``alerts.ndjson.1``
(older ones shift to ``.2`` … ``.backups``; the oldest is removed), the scheme Python's
``logging.handlers.RotatingFileHandler`` and logrotate use. That handler is not used itself because
it reports write errors to stderr instead of raising them, and a failed write must stay pending.
A batch is written whole and fsync'ed before it counts as accepted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from farmwatch.collector.outputs.base import DeliveryFailed, OutputConfigError, positive_int

FILE_OPTIONS = {"max_bytes": positive_int, "backups": positive_int}
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_BACKUPS = 5


class RotatingNdjson:
    """Writes lines to ``path``, rotating before a batch would take it past ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS,
                 where: str = "") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        if not path.parent.is_dir():
            raise OutputConfigError(f"{where}: folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise OutputConfigError(f"{where}: cannot write {path}")

    def write(self, lines: Sequence[bytes]) -> str:
        """Append ``lines`` (one JSON document each) whole; DeliveryFailed when the disk refuses."""
        data = b"".join(line.rstrip(b"\n") + b"\n" for line in lines)
        try:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except OSError as failure:
            raise DeliveryFailed(f"{self.path}: {failure.strerror or failure}") from None
        return f"{len(lines)} line(s) appended to {self.path}"

    def _rotate(self) -> None:
        oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
        oldest.unlink(missing_ok=True)
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                older.rename(self.path.with_name(f"{self.path.name}.{number + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
