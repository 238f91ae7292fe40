"""Spool-first delivery: no report is lost between the probe and the collector.

Every report is written to ``spool/`` (atomically, named by its seq) before any attempt to send
it, and leaves the spool only when the collector answers 2xx. Spooled reports go out in seq order;
the collector acknowledges an identical re-send again, so a reply lost in transit causes no
duplicate. A report the collector rejects for good (422 invalid, 409 seq reuse, 413 too large) is
moved to ``quarantine/`` with the answer beside it (``<seq>.response.json``): visible to an
operator, never retried forever, never silently dropped. 401 leads to one re-enrolment.

The spool is bounded (:data:`MAX_SPOOL_REPORTS`, :data:`MAX_SPOOL_BYTES`): about a month of
five-minute reports. Only beyond that are the oldest reports dropped, each named in a log line.
The quarantine keeps the latest :data:`MAX_QUARANTINED_REPORTS` (a collector that rejects every
report must not fill the disk), dropping older ones the same way.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from farmwatch.agent.errors import AgentError

from .enrollment import Enrollment, bearer, call
from .http_client import CollectorClient, Response
from .state import Identity, atomic_write

log = logging.getLogger(__name__)

MAX_SPOOL_REPORTS = 10_000  # 34 days of reports at the default 5-minute interval
MAX_SPOOL_BYTES = 256 * 1024 * 1024
MAX_QUARANTINED_REPORTS = 1_000
REJECTED_FOR_GOOD = {409, 413, 422}
_REPORT_NAME = re.compile(r"[0-9]+\.json")  # temp files start with a dot; answers end .response.json


def _reports(folder: Path) -> list[Path]:
    """The report files in ``folder``, lowest seq first."""
    return sorted((p for p in folder.iterdir() if _REPORT_NAME.fullmatch(p.name)), key=lambda p: int(p.stem))


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

    def put(self, seq: int, body: bytes) -> Path:
        """Store a report durably (temp file, fsync, rename), then enforce the bound."""
        path = self.folder / f"{seq:012d}.json"
        atomic_write(path, body)
        self._enforce_bound()
        return path

    def pending(self) -> list[Path]:
        """Spooled reports, lowest seq first."""
        return _reports(self.folder)

    def quarantine(self, path: Path, status: int | None, answer: str) -> Path:
        """Move a rejected report aside with the collector's answer (or why) next to it."""
        target = self.quarantine_folder / path.name
        try:
            body: object = json.loads(answer)
        except ValueError:
            body = answer
        atomic_write(
            self.quarantine_folder / f"{path.stem}.response.json",
            json.dumps({"status": status, "answer": body}, indent=1).encode(),
        )
        shutil.move(path, target)
        for dropped in _reports(self.quarantine_folder)[:-self.max_quarantined]:
            dropped.unlink()
            dropped.with_suffix(".response.json").unlink(missing_ok=True)
            log.warning("quarantine keeps its last %d reports: dropped seq %d", self.max_quarantined,
                        int(dropped.stem))
        return target

    def _enforce_bound(self) -> None:
        files = self.pending()
        sizes = [f.stat().st_size for f in files]
        total = sum(sizes)
        while files and (len(files) > self.max_reports or total > self.max_bytes):
            oldest = files.pop(0)
            total -= sizes.pop(0)
            oldest.unlink()
            log.warning(
                "spool over its bound (%d reports / %d bytes): dropped the oldest report, seq %s",
                self.max_reports, self.max_bytes, int(oldest.stem),
            )


@dataclass
class Delivery:
    """What one pass over the spool achieved."""

    delivered: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)


def deliver(spool: Spool, enrollment: Enrollment) -> Delivery:
    """Send every spooled report in seq order; stop at the first one the collector cannot take now.

    Raises :class:`CollectorUnavailable` (unreachable or 5xx: the rest stays spooled) or
    :class:`AgentError`; either way what was delivered before is already out of the spool.
    """
    done = Delivery()
    reenrolled = False
    identity = enrollment.identity()
    for path in spool.pending():
        seq = int(path.stem)
        try:
            body = _stamped(path, identity.device_id)
        except ValueError as unreadable:  # damaged on disk: sending it could never succeed
            _set_aside(spool, path, None, f"the spooled file is not a JSON report: {unreadable}", done)
            continue
        response = _post(enrollment.http, body, identity)
        if response.status_code == 401 and not reenrolled:
            reenrolled = True
            identity = enrollment.reenroll()
            body = _stamped(path, identity.device_id)
            response = _post(enrollment.http, body, identity)
        if 200 <= response.status_code < 300:
            path.unlink()
            done.delivered.append(seq)
        elif response.status_code in REJECTED_FOR_GOOD:
            _set_aside(spool, path, response.status_code, response.text, done)
        else:
            answer = f"HTTP {response.status_code}: {response.text[:200]}"
            raise AgentError(f"collector answered report seq {seq} with {answer}")
    return done


def _set_aside(spool: Spool, path: Path, status: int | None, answer: str, done: Delivery) -> None:
    target = spool.quarantine(path, status, answer)
    done.quarantined.append(int(path.stem))
    log.warning("report seq %d set aside (HTTP %s): moved to %s", int(path.stem), status, target)


def _stamped(path: Path, device_id: str) -> bytes:
    """The spooled report under the current device id (rewritten in the spool if it changed).

    A report spooled before the first enrolment, or before a re-enrolment that gave a new device
    id, belongs to this machine all the same.
    """
    body = path.read_bytes()
    report = json.loads(body)
    if not isinstance(report, dict):
        raise ValueError(f"a JSON {type(report).__name__}, not an object")
    if report.get("device_id") == device_id:
        return body
    report["device_id"] = device_id
    body = json.dumps(report).encode()
    atomic_write(path, body)
    return body


def _post(http: CollectorClient, body: bytes, identity: Identity) -> Response:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **bearer(identity)}
    return call(http, "POST", "/api/v1/reports", content=gzip.compress(body), headers=headers)
