"""Scoring end to end: ingest records + roster + anchors -> one verdict per device seen.

The live collector and ``farmwatch-detect`` both score through :func:`score_frames`, on frames built
by the same reduction, so a verdict served by the API is the verdict the offline tool computes from
the same export.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec

from farmwatch.contract import Anchor, Finding, RosterEntry, Verdict
from farmwatch.detectors.base import Context, Detector
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import Frames, flatten, paused_gc
from farmwatch.detectors.registry import REGISTRY
from farmwatch.detectors.risk import combine, label


def score(
    records: Iterable[dict[str, Any] | msgspec.Struct],
    roster: Sequence[RosterEntry],
    anchors: Sequence[Anchor],
    now: datetime,
    config: DetectionConfig | None = None,
    suppressed: Mapping[str, Collection[str]] | None = None,
) -> list[Verdict]:
    """One :class:`Verdict` per device in ``records`` (any order; ingest records as dicts, or as
    :func:`farmwatch.detectors.frame.read_records` parses them), sorted by device id.

    ``suppressed`` maps a device id to detectors whose findings for that device an analyst marked
    false positive: they are dropped before the risk combiner, so they move neither risk nor verdict.

    Raises ValueError for a naive ``now`` or a config naming unknown detectors or parameters
    (checked before any record is read), and RecordError for a record it cannot use."""
    _check_now(now)
    check_config(config or DetectionConfig())
    with paused_gc():
        return score_frames(flatten(records), roster, anchors, now, config, suppressed)


def _check_now(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")


def check_config(config: DetectionConfig) -> None:
    """Raise ValueError naming any configured detector or parameter that does not exist."""
    for name, params in config.detectors.items():
        if name not in REGISTRY:
            raise ValueError(f"detection config: no detector named {name!r} (known: {', '.join(REGISTRY)})")
        accepted = set(inspect.signature(REGISTRY[name].__init__).parameters) - {"self"}
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValueError(f"detection config: detector {name!r} has no parameter(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(accepted))})")


def score_frames(
    frames: Frames,
    roster: Sequence[RosterEntry],
    anchors: Sequence[Anchor],
    now: datetime,
    config: DetectionConfig | None = None,
    suppressed: Mapping[str, Collection[str]] | None = None,
    fitted: Mapping[str, Detector] | None = None,
    fleet_last_report: datetime | None = None,
) -> list[Verdict]:
    """:func:`score` over records already flattened.

    ``fitted`` holds detectors whose fleet baseline was learned elsewhere (from the whole fleet when
    ``frames`` hold only some devices, :mod:`farmwatch.collector.incremental`); they are used as
    given instead of being fitted on ``frames``. ``fleet_last_report``: see :class:`Context`."""
    config = config or DetectionConfig()
    _check_now(now)
    check_config(config)
    context = Context(
        roster={entry.device_id: entry for entry in roster},
        anchors={anchor.name: anchor for anchor in anchors},
        now=now.astimezone(timezone.utc),
        config=config,
        fleet_last_report=fleet_last_report,
    )
    by_device: dict[str, list[Finding]] = defaultdict(list)
    for name, kind in REGISTRY.items():
        params = config.params(name)
        if "random_state" in inspect.signature(kind.__init__).parameters:
            params.setdefault("random_state", config.random_state)
        detector = (fitted or {}).get(name) or kind(**params).fit(frames, context)
        for item in detector.detect(frames, context):
            if item.finding.score > 0 and name not in (suppressed or {}).get(item.device_id, ()):
                by_device[item.device_id].append(item.finding)
    verdicts = []
    for device in sorted(frames.reports["device_id"].unique()):
        findings = sorted(by_device.get(device, []), key=lambda f: (-f.score, f.detector, f.summary))
        risk = combine(findings, config)
        entry = context.roster.get(device)
        verdicts.append(
            Verdict(
                device_id=device,
                employee_id=entry.employee_id if entry else None,
                scored_at=context.now,
                risk=risk,
                verdict=label(risk, config),
                findings=findings,
            )
        )
    return verdicts
