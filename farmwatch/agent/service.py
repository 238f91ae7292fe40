"""The agent's three jobs — ``once``, ``run``, ``verify`` — wired from runner, spool and enrolment.

Order of work per window: collect, deliver the spool (which frees space on a full disk), take the
next seq, spool the report, then deliver it. The report is on disk before the network is touched,
so an unreachable collector costs nothing but time. A report the disk cannot take is sent directly;
one that can be neither spooled nor sent is counted in the next report's ``errors[]``.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from farmwatch.contract import Verdict, to_wire

from .delivery.enrolment import AgentConfig, Enrolment, bearer, call
from .delivery.hardware_id import hardware_id, os_machine_id
from .delivery.http_client import CollectorClient
from .delivery.notices import Notices
from .delivery.spool import Spool
from .delivery.state import StateDir
from .delivery.transport import deliver, send_directly
from .errors import AgentError, CollectorUnavailable, ReportNotKept, ReportsFailing
from .probes.base import ProbeContext
from .runner import Runner, utc_now
from .settings import DEFAULT_INTERVAL_SECONDS, Settings
from .verify_view import Progress, observations, result

log = logging.getLogger(__name__)

UNENROLLED = "unenrolled"  # device id of a report made before the first enrolment (restamped on delivery)
FIRST_RETRY_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 15.0
MAX_RETRY_AFTER_SECONDS = 3600.0  # a collector's Retry-After is honoured up to this; longer waits are cut
VERIFY_PATIENCE_SECONDS = 600.0  # how long `verify` waits for a busy collector to score its report
VERIFY_POLL_SECONDS = 5.0
VERIFY_EXIT_CODES = {"clear": 0, "review": 2, "farm": 1}  # a script can gate onboarding on it


def collect_window(runner: Runner, seconds: float,
                   wait: Callable[[float], None] = time.sleep) -> tuple[datetime, datetime]:
    """Start the probes, let ``seconds`` pass (``wait`` may show it), return the window's bounds."""
    start = utc_now(runner.context)
    runner.start()
    wait(seconds)
    return start, utc_now(runner.context)


def helper_socket(settings: Settings) -> dict[str, Any]:
    """The ProbeContext fields that make the input probe take per-user helpers' aggregates."""
    return {"input_helper_socket": settings.input_helper_socket, "input_helper_group": settings.input_helper_group}


def print_report(settings: Settings, window: float) -> int:
    """``once --print``: one report on stdout, no collector, no state."""
    runner = Runner(ProbeContext(salt=settings.salt, window_seconds=window, **helper_socket(settings)), settings.probes)
    start, end = collect_window(runner, window)
    report = runner.report(UNENROLLED, 1, start, end)
    runner.stop()
    print(json.dumps(to_wire(report), indent=2))
    return 0


class Agent:
    """One agent talking to one collector, its state in ``settings.state_dir``."""

    def __init__(self, settings: Settings, machine_id: str | None = None) -> None:
        self.settings = settings
        self.context = ProbeContext(salt=settings.salt, **helper_socket(settings))
        url, secret = settings.collector_url(), settings.enroll_secret()
        machine = machine_id or os_machine_id(self.context.platform, self.context.run, self.context.etc_root)
        self.state = StateDir(settings.state_dir)
        self.state.lock()
        self.spool = Spool(self.state.spool_dir, self.state.quarantine_dir)
        # A state dir wiped around a kept spool restarts its counter at 1: never overwrite a spooled report.
        self.state.raise_seq_floor(self.spool.highest_seq() + 1)
        self.notices = Notices(self.state.root / "notices.json")
        self.http = CollectorClient(url, HTTP_TIMEOUT_SECONDS, settings.tls())
        machine_hash = hardware_id(machine)
        self.enrolment = Enrolment(
            self.http, self.state, secret, socket.gethostname(), machine_hash, clock=self.context.clock
        )
        self.runner = Runner(self.context, settings.probes, hardware_id=machine_hash)
        self._collector_interval: float | None = None
        self.last_report: dict[str, Any] | None = None

    def close(self) -> None:
        self.runner.stop()

    def _configure(self) -> None:
        """Enrol if needed and apply the collector's config (fetched at most hourly)."""
        self.enrolment.identity()
        self._apply(self.enrolment.refresh_config())

    def _apply(self, config: AgentConfig) -> None:
        self.context.anchors = config.anchors
        self.context.options = config.probe_options
        self._collector_interval = config.interval_seconds

    def _keep_window(self, start: datetime, end: datetime, attempt: Callable[[], bool]) -> str | None:
        """Make the window's report and keep it; why not when it could be neither spooled nor sent.

        ``attempt`` delivers the spool and says whether the collector took everything. The backlog
        goes first, so on a full disk delivering frees the space the new report needs.
        """
        identity = self.state.identity
        made = self.runner.report(identity.device_id if identity else UNENROLLED, 1, start, end)  # seq: below
        online = attempt() if self.spool.pending() else True
        self.notices.take_from(self.spool)
        seq = self.state.allocate_seq()
        report = to_wire(made.model_copy(update={"seq": seq, "errors": [*made.errors, *self.notices.entries()]}))
        self.last_report = report  # what `verify` tells the person this laptop showed
        try:
            self.spool.put(seq, json.dumps(report).encode())
        except OSError as unwritable:
            return self._keep_unspooled(report, online, f"cannot spool it: {unwritable.strerror or unwritable}")
        self.notices.reported()
        if online:
            attempt()
        return None

    def _keep_unspooled(self, report: dict[str, object], online: bool, why: str) -> str | None:
        """Send a report the spool cannot take; count it when the collector cannot take it either."""
        seq = report["seq"]
        if not online:
            why = f"{why}; not sent: the collector did not take the spool before it"
        else:
            try:
                stored = send_directly(report, self.enrolment)
            except (AgentError, OSError) as failed:
                why = f"{why}; not sent: {failed}"
            else:
                log.warning("report seq %s: %s; sent it directly (stored as seq %d)", seq, why, stored)
                self.notices.reported()
                return None
        start, end = (datetime.fromisoformat(str(report[k])) for k in ("window_start", "window_end"))
        count = self.notices.not_kept(start, end, why)
        log.error("report seq %s (window %s to %s) is lost: %s; %d such report(s) will be named in the next "
                  "report's errors[]", seq, report["window_start"], report["window_end"], why, count)
        return why

    def _deliver(self) -> None:
        try:
            done = deliver(self.spool, self.enrolment)
        finally:
            self.notices.take_from(self.spool)
        if done.renumbered:
            log.info("renumbered seq %s (their seqs were stored with other content)",
                     ", ".join(f"{old}->{new}" for old, new in done.renumbered.items()))
        if done.delivered:
            log.info("delivered seq %s to %s", ", ".join(map(str, done.delivered)), self.http.base_url)
        if done.quarantined:
            log.warning("quarantined seq %s in %s (see the .response.json beside each)",
                        ", ".join(map(str, done.quarantined)), self.state.quarantine_dir)

    def once(self, window: float, wait: Callable[[float], None] = time.sleep) -> int:
        """Enrol if needed, collect one window (``wait`` lets it pass), spool it, deliver the spool."""
        self._apply(AgentConfig.parse(self.state.config.get("config", {})))
        try:
            self._configure()
            failure: AgentError | None = None
        except AgentError as error:  # still collect and spool: the report waits for the next run
            failure = error
        self.context.window_seconds = window

        def attempt() -> bool:
            nonlocal failure
            if failure is not None and not isinstance(failure, ReportsFailing):
                return False
            try:
                self._deliver()
                failure = None  # a later pass that got past a failing report clears it
            except ReportsFailing as error:  # the collector is up: the new report can still go out
                failure = error
            except AgentError as error:
                failure = error
                return False
            return True

        lost = self._keep_window(*collect_window(self.runner, window, wait), attempt)
        if lost is not None:
            raise ReportNotKept(f"this window's report could be neither spooled nor sent ({lost}); "
                                "it is counted in the next report's errors[]")
        if failure is not None:
            kept = len(self.spool.pending())
            raise type(failure)(f"{failure}; {kept} report(s) kept in {self.spool.folder} for the next run")
        return 0

    def run(self, stop: threading.Event) -> int:
        """Report every interval until ``stop``; retry delivery with backoff in between."""
        self._apply(AgentConfig.parse(self.state.config.get("config", {})))
        retry = _Backoff()
        self._attempt(retry)
        self.runner.start()
        start, deadline = utc_now(self.context), time.monotonic() + self._interval()
        while not stop.is_set():
            self.context.window_seconds = self._interval()
            while not stop.is_set() and time.monotonic() < deadline:
                if retry.due() and self.spool.pending():
                    self._attempt(retry)
                stop.wait(max(0.0, min(deadline, retry.at) - time.monotonic()))
            if stop.is_set():
                break  # a partial window is not reported; the next start begins a fresh one
            end = utc_now(self.context)
            self._keep_window(start, end, lambda: not retry.holding() and self._attempt(retry))
            # Windows tile (each starts where the last ended) on a fixed cadence; after a long
            # delivery or a suspended laptop the cadence restarts from now instead of catching up.
            start, deadline = end, deadline + self._interval()
            if deadline <= time.monotonic():
                deadline = time.monotonic() + self._interval()
        return 0

    def _attempt(self, retry: _Backoff) -> bool:
        """Enrol if needed and deliver the spool; whether that worked (else the backoff is set)."""
        try:
            self._configure()
            self._deliver()
        except ReportsFailing as error:  # the collector is up: go on, try again later
            log.warning("%s; retrying in %.0f s", error, retry.failed(self._interval()))
            return True
        except CollectorUnavailable as error:
            log.warning("%s; %d report(s) spooled, retrying in %.0f s",
                        error, len(self.spool.pending()), retry.failed(self._interval(), asked=error.retry_after))
        except AgentError as error:
            log.error("%s; retrying in %.0f s", error, retry.failed(self._interval(), at_ceiling=True))
        else:
            retry.succeeded()
            return True
        return False

    def _interval(self) -> float:
        """Seconds per report: the flag or config file, else the collector's choice, else 5 minutes."""
        return self.settings.interval_seconds or self._collector_interval or DEFAULT_INTERVAL_SECONDS

    def verify(self, seconds: float) -> int:
        """Onboarding check: report ``seconds`` of observation, then print the collector's verdict."""
        print(f"farmwatch onboarding check: observing this laptop for {seconds:.0f} s", flush=True)
        self.once(seconds, Progress(sys.stdout).wait)
        print("What this laptop showed:")
        for line in observations(self.last_report or {}):
            print(f"  - {line}")
        print("Asking the collector for its verdict ...", flush=True)
        identity = self.enrolment.identity()
        asked = {"seconds": round(seconds)}
        patience = time.monotonic() + VERIFY_PATIENCE_SECONDS
        while True:
            # 503, or a verdict marked stale: the collector's scoring run has not reached this
            # report yet (big fleets); an onboarding answer must include it, so ask again.
            try:
                response = call(self.http, "POST", "/api/v1/verify", json=asked, headers=bearer(identity))
            except CollectorUnavailable as failed:
                if failed.status != 503 or time.monotonic() > patience:
                    raise
            else:
                if not _marked_stale(response.text) or time.monotonic() > patience:
                    break
            log.warning("the collector is still scoring this report; asking again in %.0f s", VERIFY_POLL_SECONDS)
            time.sleep(VERIFY_POLL_SECONDS)
        if response.status_code != 200:
            raise AgentError(f"collector answered HTTP {response.status_code} to /api/v1/verify: {response.text[:200]}")
        try:
            verdict = Verdict.model_validate_json(response.text)
        except ValidationError as bad:
            raise AgentError(f"the collector's verdict is malformed: {bad}") from bad
        if _marked_stale(response.text):
            print(f"note: after {VERIFY_PATIENCE_SECONDS:.0f} s the collector's verdict still predates this report")
        print(f"verdict: {verdict.verdict} (risk {verdict.risk:.2f}) for device {verdict.device_id}")
        for finding in verdict.findings:
            print(f"  [{finding.severity}] {finding.summary}")
        for line in result(verdict.verdict):
            print(line)
        return VERIFY_EXIT_CODES[verdict.verdict]


def _marked_stale(body: str) -> bool:
    try:
        return json.loads(body).get("stale") is True
    except (ValueError, AttributeError):
        return False


class _Backoff:
    """Exponential backoff with jitter (so a fleet does not retry in lockstep), capped; a collector's
    Retry-After is honoured up to :data:`MAX_RETRY_AFTER_SECONDS` (windows are still spooled)."""

    def __init__(self) -> None:
        self.failures = 0
        self.at = float("inf")
        self.asked = False  # the wait is the collector's Retry-After: no attempt at all before it ends

    def due(self) -> bool:
        return time.monotonic() >= self.at

    def holding(self) -> bool:
        """Within a wait the collector asked for (even a window's end does not try before it)."""
        return self.asked and not self.due()

    def failed(self, ceiling: float, at_ceiling: bool = False, asked: float | None = None) -> float:
        self.failures += 1
        base = ceiling if at_ceiling else min(ceiling, FIRST_RETRY_SECONDS * 2 ** (self.failures - 1))
        delay = base * random.uniform(0.5, 1.0)
        self.asked = asked is not None
        if asked is not None:
            delay = max(delay, min(asked, MAX_RETRY_AFTER_SECONDS))
        self.at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.at = float("inf")
        self.asked = False
