"""Detectors that decide over whole columns which devices can have a finding (and do per-device work
only for those) find what they would find judging every device.

Each detector's prefilter is replaced by "every device" and the findings are compared on simulated
fleets (farmwatch.simulator, two seeds, with the tactics that fire agent_health's and input_rhythm's
rarer parts). A prefilter that dropped a device with a finding fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest

from farmwatch.contract import to_wire
from farmwatch.detectors.base import Context, Detector
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import Frames, flatten
from farmwatch.detectors.signals.agent_health import AgentHealthDetector
from farmwatch.detectors.signals.always_on import AlwaysOnDetector
from farmwatch.detectors.signals.geo_mismatch import GeoMismatchDetector
from farmwatch.detectors.signals.host_mismatch import HostMismatchDetector
from farmwatch.detectors.signals.input_rhythm import InputRhythmDetector
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet

FLEETS = {"seed-22-tampering": (22, ("tampering",)), "seed-21-tactics": (21, ("tampering", "kvm-reflashed"))}

# Per detector: its prefilter method, and what judging every device returns in its place.
EVERY_DEVICE: dict[type[Detector], tuple[str, Callable[..., Any]]] = {
    AgentHealthDetector: ("_candidates", lambda self, reports, *_: sorted(reports["device_id"].unique())),
    HostMismatchDetector: ("_candidates", lambda self, reports, positions, context: sorted(positions)),
    InputRhythmDetector: ("_rhythm_candidates", lambda self, odd: set(odd["device_id"])),
    GeoMismatchDetector: ("_candidates", lambda self, outside, context: outside),
    AlwaysOnDetector: ("_candidates", lambda self, reports, first, count: range(len(first))),
}


@pytest.fixture(scope="module", params=list(FLEETS))
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Frames, Context]:
    seed, tactics = FLEETS[request.param]
    files = write_fleet(tmp_path_factory.mktemp(request.param), seed=seed, legit=45, farms=10, days=4,
                        tactics=tactics)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    now = max(datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")) for r in records) + timedelta(seconds=30)
    context = Context(roster={e.device_id: e for e in load_roster(files.roster)},
                      anchors={a.name: a for a in load_anchors(files.anchors)}, now=now, config=DetectionConfig())
    return flatten(records), context


def _findings(detector: Detector, frames: Frames, context: Context) -> dict[str, bytes]:
    found = detector.fit(frames, context).detect(frames, context)
    return {item.device_id: orjson.dumps(to_wire(item.finding), option=orjson.OPT_SORT_KEYS) for item in found}


@pytest.mark.parametrize("kind", list(EVERY_DEVICE), ids=lambda kind: kind.name)
def test_the_prefilter_keeps_every_device_with_a_finding(kind: type[Detector], fleet: tuple[Frames, Context],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    frames, context = fleet
    prefiltered = _findings(kind(), frames, context)
    method, every_device = EVERY_DEVICE[kind]
    monkeypatch.setattr(kind, method, every_device)
    judged_one_by_one = _findings(kind(), frames, context)
    assert judged_one_by_one, f"the fleet gives {kind.name} nothing to find: the comparison would prove nothing"
    assert prefiltered == judged_one_by_one
