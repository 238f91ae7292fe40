"""One contract every registered detector keeps (like scikit-learn's parametrize_with_checks)."""

from __future__ import annotations

import inspect
import json

import pytest
from detector_records import NOW, make_record

from farmwatch.contract import Finding
from farmwatch.detectors.base import Context, DeviceFinding
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import Frames, flatten
from farmwatch.detectors.registry import REGISTRY
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.times import parse_utc

DETECTORS = [pytest.param(cls, id=name) for name, cls in REGISTRY.items()]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Frames, Context]:
    """A simulated fleet (seed 3: 40 employees, 12 farms of every kind, 2 days) on which every
    registered detector finds something, so the checks on findings below always run."""
    files = write_fleet(tmp_path_factory.mktemp("fleet"), seed=3, legit=40, farms=12, days=2)
    records = [json.loads(line) for line in files.records.read_bytes().splitlines()]
    now = max(parse_utc(record["report"]["window_end"]) for record in records)
    roster = {entry.device_id: entry for entry in load_roster(files.roster)}
    context = Context(roster, {a.name: a for a in load_anchors(files.anchors)}, now, DetectionConfig())
    return flatten(records), context


@pytest.mark.parametrize("cls", DETECTORS)
def test_init_only_stores_parameters(cls) -> None:
    detector = cls()
    for name in inspect.signature(cls.__init__).parameters:
        if name != "self":
            assert hasattr(detector, name), f"{cls.__name__}.__init__ must store {name}"
    assert not [key for key in vars(detector) if key.endswith("_")], "learned state appears only after fit"


@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_detect_contract(cls, fleet: tuple[Frames, Context]) -> None:
    frames, context = fleet
    detector = cls()
    assert detector.fit(frames, context) is detector
    found = detector.detect(frames, context)
    assert found, f"{cls.name} finds nothing on a fleet with every kind of farm"
    again = cls().fit(frames, context).detect(frames, context)
    assert [(f.device_id, f.finding) for f in found] == [(f.device_id, f.finding) for f in again], "deterministic"
    for item in found:
        assert isinstance(item, DeviceFinding) and isinstance(item.finding, Finding)
        assert item.finding.detector == cls.name
        assert 0 <= item.finding.score <= 1 and item.finding.summary.endswith(".")
        Finding.model_validate_json(item.finding.model_dump_json())  # evidence is plain JSON
    assert isinstance(cls.group, str) and isinstance(cls.weak, bool)


@pytest.mark.parametrize("cls", DETECTORS)
def test_empty_sections_are_absent_not_evidence(cls) -> None:
    records = [make_record("bare", minutes) for minutes in range(0, 600, 5)]
    context = Context({}, {}, NOW, DetectionConfig())
    frames = flatten(records)
    assert cls().fit(frames, context).detect(frames, context) == []
