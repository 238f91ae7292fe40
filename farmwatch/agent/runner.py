"""Runs the registered probes over one window and assembles the report.

Like a Datadog check runner: whatever a probe raises (an import error of its OS library,
``ProbeUnavailable``, a bug) becomes an ``errors[]`` entry and the other probes still run; a
section that does not match the contract is dropped with an entry naming the bad fields.
Listener probes are started at the window's start and read at its end; in ``run`` mode one
:class:`Runner` lives across windows, so they keep listening between reports. Each ``collect()``
runs on its own thread with a time limit, so a probe stuck in an OS call delays the report by
at most :data:`PROBE_TIMEOUT_SECONDS` and is skipped, with an entry, until it returns.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
import threading
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from farmwatch import __version__
from farmwatch.contract import REPORT_SCHEMA, AgentInfo, ProbeError, Report, field_errors

from .probes.base import Probe, ProbeContext, ProbeUnavailable
from .probes.registry import PROBES, load_probe

log = logging.getLogger(__name__)

_OS_NAMES = {"linux": "linux", "win32": "windows", "darwin": "darwin"}
PROBE_TIMEOUT_SECONDS = 120.0  # generous: latency probes to many anchors take tens of seconds
_NOTHING = object()  # a probe that filled no section this window (None is a valid section value)


def agent_info(os_platform: str = sys.platform, hardware_id: str | None = None) -> AgentInfo:
    """Who reports: agent version, OS, OS version, host name, and the machine hash it enrolled with."""
    return AgentInfo(
        # The package's own constant (pyproject's version; tests/test_packaging.py keeps them equal), not
        # importlib.metadata.version(): that parsed the whole installed METADATA (README included) and kept
        # site-packages' listing cached, ~0.35 MB of the agent's resident memory (bench/agent_cost.py).
        version=__version__,
        # Other Unixes report as linux, the nearest OS the v1 contract names.
        os=_OS_NAMES.get(os_platform, "linux"),  # type: ignore[arg-type]
        os_version=_os_version(os_platform),
        hostname=socket.gethostname(),
        hardware_id=hardware_id,
    )


def _os_version(os_platform: str) -> str:
    """The version people know: macOS 14.5 (not Darwin 23.5), Windows 10.0.22631, Linux's kernel."""
    if os_platform == "darwin":
        return platform.mac_ver()[0] or platform.release()
    if os_platform == "win32":
        return platform.version()
    return platform.release()


def _describe(error: BaseException) -> str:
    if isinstance(error, ProbeUnavailable):
        return str(error)
    return f"{type(error).__name__}: {error}"


class Runner:
    """Owns one instance of each probe; ``start`` at a window's start, ``report`` at its end."""

    def __init__(
        self,
        context: ProbeContext,
        names: Iterable[str] | None = None,
        timeout: float = PROBE_TIMEOUT_SECONDS,
        hardware_id: str | None = None,
    ) -> None:
        self.context = context
        self.timeout = timeout
        self.hardware_id = hardware_id  # in every report's agent section (None: not enrolled, e.g. once --print)
        self.probes: list[Probe[Any]] = []
        self._stuck: dict[str, _Attempt] = {}
        self._load_errors: list[ProbeError] = []
        self._pending: list[ProbeError] = []
        self._started = False
        for name in PROBES if names is None else names:
            try:
                self.probes.append(load_probe(name)(context))
            except Exception as error:  # a missing OS library must not stop the agent
                self._load_errors.append(ProbeError(probe=name, message=f"could not load: {_describe(error)}"))

    def start(self) -> None:
        """Start listener probes (no-op for the rest); idempotent across windows."""
        if self._started:
            return
        self._started = True
        for probe in self.probes:
            try:
                probe.start()
            except Exception as error:
                self._pending.append(ProbeError(probe=probe.name, message=f"could not start: {_describe(error)}"))

    def stop(self) -> None:
        """Stop listener probes at shutdown."""
        for probe in self.probes:
            try:
                probe.stop()
            except Exception as error:
                log.warning("probe %s did not stop cleanly: %s", probe.name, _describe(error))
        self._started = False

    def report(self, device_id: str, seq: int, window_start: datetime, window_end: datetime) -> Report:
        """Collect every probe once and assemble the window's report."""
        sections: dict[str, Any] = {}
        errors = self._load_errors + self._pending
        self._pending = []
        with self.context.kernel.collection():  # one /proc pass and one socket dump for every probe
            for probe in self.probes:
                value, found = self._collect(probe)
                errors += found
                if value is not _NOTHING:
                    sections[probe.section] = value
        return Report.model_validate({
            "schema": REPORT_SCHEMA,
            "device_id": device_id,
            "seq": seq,
            "window_start": window_start,
            "window_end": window_end,
            "agent": agent_info(self.context.platform, self.hardware_id),
            **sections,
            "errors": errors,
        })

    def _collect(self, probe: Probe[Any]) -> tuple[Any, list[ProbeError]]:
        """The probe's section (``_NOTHING`` if none) and the errors[] entries it earned this window."""

        def entry(message: str) -> ProbeError:
            return ProbeError(probe=probe.name, message=message)

        earlier = self._stuck.get(probe.name)
        if earlier and earlier.thread.is_alive():
            return _NOTHING, [entry("skipped: its collect() from an earlier window has not returned yet")]
        probe.problems = []
        attempt = _Attempt(probe)
        attempt.thread.join(self.timeout)
        if attempt.thread.is_alive():
            self._stuck[probe.name] = attempt
            return _NOTHING, [entry(f"collect() did not finish within {self.timeout:g} s; skipped until it returns")]
        self._stuck.pop(probe.name, None)
        problems = [entry(message) for message in probe.problems]
        if attempt.error is not None:  # one broken probe never takes the report down
            return _NOTHING, [entry(_describe(attempt.error)), *problems]
        invalid = _section_errors(probe.section, attempt.value)
        if invalid:
            return _NOTHING, [entry(invalid), *problems]
        return attempt.value, problems


class _Attempt:
    """One probe's ``collect()`` on its own (daemon) thread, with its result or exception."""

    def __init__(self, probe: Probe[Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(probe,), name=f"probe-{probe.name}", daemon=True)
        self.thread.start()

    def _run(self, probe: Probe[Any]) -> None:
        try:
            self.value = probe.collect()
        except Exception as error:
            self.error = error


def _section_errors(section: str, value: Any) -> str | None:
    """Why ``value`` cannot fill ``section`` of a report, or None when it can."""
    adapter = _section_adapter(section)
    if adapter is None:  # a section newer than this contract: kept as-is
        return None
    try:
        adapter.validate_python(value, strict=True)
    except ValidationError as invalid:
        named = field_errors(invalid, prefix=section)
        return "invalid section: " + "; ".join(f"{e['field']}: {e['message']}" for e in named)
    return None


@cache
def _section_adapter(section: str) -> TypeAdapter[Any] | None:
    """The validator of a report section's type, built once per section (building one costs more than using it)."""
    field = Report.model_fields.get(section)
    if field is None or field.annotation is None:
        return None
    return TypeAdapter(field.annotation)


def utc_now(context: ProbeContext) -> datetime:
    """The context's clock as a tz-aware UTC time."""
    return datetime.fromtimestamp(context.clock(), timezone.utc)
