"""One device's data must never cost the fleet its verdicts: find the devices a scoring run chokes on.

Scoring runs over the whole fleet at once (fleet detectors compare devices), so one record the
detectors cannot use used to fail every run and leave every verdict stale. :func:`score_isolated`
runs the fleet as usual; only when that fails does it bisect the devices to find the ones whose
records make the detectors raise (:func:`isolate`), scores everyone else together, and gives each
culprit a verdict of its own: ``review`` with an error finding naming what failed. A farm operator
who breaks the scorer for their own laptop earns a review, not an escape. The fleet baselines
(:func:`farmwatch.collector.incremental.refresh_baselines`) leave out the devices they cannot learn
from with the same :func:`isolate`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from farmwatch.contract import Finding, RosterEntry, Verdict
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.risk import label

log = logging.getLogger("farmwatch.collector.isolation")

ScorePart = Callable[[Collection[str] | None], list[Verdict]]
"""Score the devices named (None: every device in the window) and return their verdicts."""

ERROR_DETECTOR = "scoring_error"


@dataclass
class IsolatedRun:
    """A run's verdicts and, per device the detectors could not score, why."""

    verdicts: list[Verdict]
    broken: dict[str, str] = field(default_factory=dict)


def score_isolated(
    score_part: ScorePart,
    devices: Callable[[], Sequence[str]],
    roster: Sequence[RosterEntry],
    now: datetime,
    config: DetectionConfig,
) -> IsolatedRun:
    """The fleet's verdicts even when some devices' records break the detectors.

    Raises only when the run fails without any device to blame (e.g. the database is gone): the
    caller counts that run as failed and keeps the previous verdicts."""
    try:
        return IsolatedRun(score_part(None))
    except Exception as failure:  # noqa: BLE001 - any detector failure is isolated below
        log.warning("scoring run failed (%s); looking for the devices that break it", _describe(failure))
    everyone = sorted(set(devices()))
    broken = isolate(score_part, everyone)
    if not broken:
        raise RuntimeError("the scoring run fails, but no device alone makes it fail")
    healthy = [device for device in everyone if device not in broken]
    verdicts = score_part(healthy) if healthy else []
    employees = {entry.device_id: entry.employee_id for entry in roster}
    for device, reason in sorted(broken.items()):
        log.error("device %s: its records cannot be scored (%s); verdict held at review", device, reason)
        verdicts.append(error_verdict(device, employees.get(device), reason, now, config))
    return IsolatedRun(sorted(verdicts, key=lambda verdict: verdict.device_id), broken)


def isolate(attempt: Callable[[list[str]], object], devices: Sequence[str]) -> dict[str, str]:
    """Run ``attempt`` on ``devices``; where it raises, on each half of them instead, down to single
    devices. Returns why it failed for each device that makes it fail alone (``k`` such devices among
    ``n`` cost about ``2 k log2 n`` attempts, each smaller than the last); every other device was in
    some attempt that succeeded, in the order given."""
    broken: dict[str, str] = {}

    def narrow(part: list[str]) -> None:
        try:
            attempt(part)
            return
        except Exception as failure:  # noqa: BLE001 - narrowing down which device raises
            if len(part) == 1:
                broken[part[0]] = _describe(failure)
                return
        middle = len(part) // 2
        narrow(part[:middle])
        narrow(part[middle:])

    narrow(list(devices))
    return broken


def error_verdict(
    device_id: str, employee_id: str | None, reason: str, now: datetime, config: DetectionConfig
) -> Verdict:
    """``review`` at the review threshold, with one finding saying the records could not be scored."""
    risk = config.review_threshold
    summary = ("This device's reports could not be scored, so its verdict is held at review until an analyst "
               "looks (farmwatch-collector devices purge removes poisoned data).")
    return Verdict(
        device_id=device_id, employee_id=employee_id, scored_at=now, risk=risk,
        verdict=label(risk, config), findings=[_error_finding(summary, {"error": reason}, risk)],
    )


def with_refusals(
    verdict: Verdict | None, device_id: str, employee_id: str | None, reasons: Sequence[str], now: datetime,
    config: DetectionConfig,
) -> Verdict:
    """``verdict`` (None: the device has no window left to score) with the device's refused reports
    (:func:`farmwatch.collector.rollups.refusals`) as its own error evidence: one more finding, and
    a risk of at least the review threshold. A farm operator who stores what the detectors refuse
    earns a review, not an escape."""
    summary = (f"{len(reasons)} of this device's stored reports were refused by the reduction (a time outside the "
               "contract's bounds, or unreadable), so its verdict is at least review until an analyst looks "
               "(farmwatch-collector devices purge removes poisoned data).")
    finding = _error_finding(summary, {"error": reasons[-1], "refused_reports": len(reasons)}, config.review_threshold)
    if verdict is None:
        verdict = Verdict(device_id=device_id, employee_id=employee_id, scored_at=now, risk=0.0,
                          verdict=label(0.0, config), findings=[])
    risk = max(verdict.risk, config.review_threshold)
    return verdict.model_copy(update={"risk": risk, "verdict": label(risk, config),
                                      "findings": [*verdict.findings, finding]})


def _error_finding(summary: str, evidence: dict[str, object], risk: float) -> Finding:
    return Finding(detector=ERROR_DETECTOR, severity="medium", score=risk, summary=summary, evidence=evidence,
                   attack=None, first_seen=None, last_seen=None)


def _describe(failure: Exception) -> str:
    return f"{type(failure).__name__}: {failure}"[:300]
