"""Spool-first delivery: no report is lost between the probe and the collector.

Spooled reports (:mod:`.spool`) go out in seq order and leave the spool only when the collector
answers 2xx; the collector acknowledges an identical re-send again, so a reply lost in transit
causes no duplicate. What each other answer does:

- **409 on ``seq``** (the seq is stored with other content: a reinstalled agent, a spool written
  before the first enrolment or restored from a backup, a counter a full disk kept from being
  saved): the report is renamed to the next seq of the state's counter (which enrolment raised to
  the collector's ``next_seq``) and sent again; a renamed report is stamped with its new seq, so
  a crash in between re-sends the same content. Each taken seq raises the counter past it; a
  report still colliding after :data:`MAX_RENUMBERS` stays spooled and the next pass starts higher.
- **409 otherwise, 413, 422**: rejected for good; moved to ``quarantine/`` with the answer beside it
  (``<seq>.response.json``): visible to an operator, never retried forever, never silently dropped.
- **401**: one re-enrolment.
- **unreachable, 429, 502, 503, 504**: the collector is away, busy or rate-limiting us; the pass stops,
  the spool stays (``run`` waits as long as a ``Retry-After`` asks, up to
  :data:`farmwatch.agent.service.MAX_RETRY_AFTER_SECONDS`).
- **any other 5xx**: the collector failed on this report. The pass skips it and goes on; when a
  later report is accepted in the same pass, the collector works and the failure counts against
  the skipped one, which after :data:`MAX_FAILED_ATTEMPTS` such passes is quarantined (a report
  the collector can never take must not be retried for ever). :data:`MAX_FAILURES_IN_A_ROW` of
  them with nothing accepted in between means the collector itself is failing: nothing is
  counted and the pass stops.
- a spooled file that cannot be read safely is quarantined with the reason; the pass goes on.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farmwatch.agent.errors import AgentError, CollectorUnavailable, ReportsFailing

from .enrolment import Enrolment, bearer, call
from .http_client import CollectorClient, Response
from .spool import Spool, UnreadableReport
from .state import Identity

log = logging.getLogger(__name__)

REJECTED_FOR_GOOD = {409, 413, 422}
COLLECTOR_AWAY = {502, 503, 504}  # a proxy with no healthy upstream, or a busy or full collector
MAX_FAILED_ATTEMPTS = 5
MAX_FAILURES_IN_A_ROW = 3
MAX_RENUMBERS = 5  # each one raises the floor past the taken seq: a stale counter converges over passes


@dataclass
class Delivery:
    """What one pass over the spool achieved."""

    delivered: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    renumbered: dict[int, int] = field(default_factory=dict)  # old seq -> the seq it was stored under


def deliver(spool: Spool, enrolment: Enrolment) -> Delivery:
    """Send every spooled report in seq order; stop when the collector cannot take reports now.

    Raises :class:`CollectorUnavailable` (unreachable or 5xx: the rest stays spooled; its subclass
    :class:`ReportsFailing` when the collector is up but failed on some reports, which were skipped)
    or :class:`AgentError`; either way what was delivered before is already out of the spool.
    """
    done = Delivery()
    courier = _Courier(enrolment)
    failing: list[tuple[Path, int, str]] = []  # 5xx this pass, not yet followed by an accepted report
    for path in spool.pending():
        seq = int(path.stem)
        try:
            report = spool.read(path)
        except UnreadableReport as unreadable:  # damaged or planted on disk: sending it could never succeed
            _set_aside(spool, path, None, f"the spooled file is unreadable: {unreadable}", done)
            continue
        spooled = _Spooled(spool, path, report)
        report["seq"] = seq  # the name is the truth: a rename for a new seq may predate the restamp
        try:
            response = courier.send(report, spooled.keep)
        except CollectorUnavailable as failure:
            if not _failed_on_this_report(failure.status) or len(failing) + 1 >= MAX_FAILURES_IN_A_ROW:
                raise
            failing.append((spooled.path, report["seq"], str(failure)))
            continue
        if 200 <= response.status_code < 300:
            spool.forget(spooled.path)
            done.delivered.append(report["seq"])
            if report["seq"] != seq:
                done.renumbered[seq] = report["seq"]
            _count_failures(spool, failing, done)
        elif _seq_taken(response):  # still taken after MAX_RENUMBERS: the next pass starts higher
            log.warning("report seq %d: every seq tried this pass is taken; kept for the next pass", report["seq"])
        elif response.status_code in REJECTED_FOR_GOOD:
            _set_aside(spool, spooled.path, response.status_code, response.text, done)
        else:
            answer = f"HTTP {response.status_code}: {response.text[:200]}"
            raise AgentError(f"collector answered report seq {report['seq']} with {answer}")
    if failing:
        raise ReportsFailing(
            f"{failing[-1][2]} for report seq {', '.join(str(s) for _, s, _ in failing)}; kept for a later pass",
            status=500,
        )
    return done


def send_directly(report: dict[str, Any], enrolment: Enrolment) -> int:
    """Send a report that could not be spooled (a full disk); the seq it was stored under.

    Raises :class:`CollectorUnavailable` or :class:`AgentError` when the collector did not take it.
    """
    response = _Courier(enrolment).send(report, lambda _: None)
    if not 200 <= response.status_code < 300:
        raise AgentError(f"collector answered report seq {report['seq']} with HTTP {response.status_code}: "
                         f"{response.text[:200]}")
    return int(report["seq"])


class _Courier:
    """Posts reports under the current identity: one re-enrolment on 401, a new seq on a taken one."""

    def __init__(self, enrolment: Enrolment) -> None:
        self.enrolment = enrolment
        self.identity = enrolment.identity()
        self.reenrolled = False

    def send(self, report: dict[str, Any], keep: Callable[[dict[str, Any]], None]) -> Response:
        """POST ``report``; ``keep`` is called with every version of it before that version is sent."""
        response = self._post(report, keep)
        for _ in range(MAX_RENUMBERS):
            if not _seq_taken(response):
                break
            taken = int(report["seq"])
            state = self.enrolment.state
            state.raise_seq_floor(taken + 1)
            report["seq"] = state.allocate_seq()
            log.info("seq %d is stored with other content (a reinstalled agent?): sending it as seq %d",
                     taken, report["seq"])
            response = self._post(report, keep)
        return response

    def _post(self, report: dict[str, Any], keep: Callable[[dict[str, Any]], None]) -> Response:
        report["device_id"] = self.identity.device_id  # a report made before (re-)enrolment is ours all the same
        keep(report)
        response = _post(self.enrolment.http, json.dumps(report).encode(), self.identity)
        if response.status_code == 401 and not self.reenrolled:
            self.reenrolled = True
            self.identity = self.enrolment.reenroll()
            report["device_id"] = self.identity.device_id
            keep(report)
            response = _post(self.enrolment.http, json.dumps(report).encode(), self.identity)
        return response


class _Spooled:
    """A report file whose name and content follow the seq and device id it is sent under."""

    def __init__(self, spool: Spool, path: Path, report: dict[str, Any]) -> None:
        self.spool = spool
        self.path = path
        self._written = (report.get("device_id"), report.get("seq"))

    def keep(self, report: dict[str, Any]) -> None:
        """Rename for a new seq, then restamp, before the collector can have seen this version."""
        if report["seq"] != int(self.path.stem):
            self.path = self.spool.renumber(self.path, report["seq"])
        if (report["device_id"], report["seq"]) != self._written:
            self.spool.rewrite(self.path, json.dumps(report).encode())
            self._written = (report["device_id"], report["seq"])


def _failed_on_this_report(status: int | None) -> bool:
    """A 5xx that may be about the report (not unreachable, not a busy, full or rate-limiting collector)."""
    return status is not None and 500 <= status < 600 and status not in COLLECTOR_AWAY


def _seq_taken(response: Response) -> bool:
    """A 409 naming ``seq``: that seq is stored with other content."""
    if response.status_code != 409:
        return False
    try:
        errors = response.json().get("errors", [])
        return any(isinstance(e, dict) and e.get("field") == "seq" for e in errors)
    except (ValueError, AttributeError):
        return False


def _count_failures(spool: Spool, failing: list[tuple[Path, int, str]], done: Delivery) -> None:
    """A later report was accepted: the collector works, so each skipped 5xx counts against its report."""
    for path, seq, answer in failing:
        attempts = spool.count_failure(seq)
        if attempts >= MAX_FAILED_ATTEMPTS:
            why = (f"{answer}; {attempts} passes failed on this report while the collector accepted later ones, "
                   "so it is not retried")
            _set_aside(spool, path, None, why, done)
        else:
            log.warning("%s for report seq %d while it accepted later ones (attempt %d of %d)",
                        answer, seq, attempts, MAX_FAILED_ATTEMPTS)
    failing.clear()


def _set_aside(spool: Spool, path: Path, status: int | None, answer: str, done: Delivery) -> None:
    seq = int(path.stem)
    try:
        target = spool.quarantine(path, status, answer)
    except OSError as failed:  # cannot even move it: skip it this pass, the rest still goes out
        log.error("report seq %d could not be set aside (%s): %s", seq, failed.strerror or failed, answer)
        return
    done.quarantined.append(seq)
    log.warning("report seq %d set aside (HTTP %s): moved to %s", seq, status, target)


def _post(http: CollectorClient, body: bytes, identity: Identity) -> Response:
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", **bearer(identity)}
    return call(http, "POST", "/api/v1/reports", content=gzip.compress(body), headers=headers)
