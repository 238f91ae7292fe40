"""One contract every registered detector keeps (like scikit-learn's parametrize_with_checks)."""

from __future__ import annotations

import inspect

import pytest
from detector_records import ANCHORS, NOW, connection, make_record, roster_entry, tool, user_input

from farmwatch.contract import Finding
from farmwatch.detectors.base import Context, DeviceFinding
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import flatten
from farmwatch.detectors.registry import REGISTRY

DETECTORS = [pytest.param(cls, id=name) for name, cls in REGISTRY.items()]


def _fleet() -> tuple[list[dict], Context]:
    """A small mixed fleet: enough that every detector has something to look at."""
    records = []
    for n in range(25):
        device = f"d{n:02}"
        for minutes in range(0, 48 * 60, 60):
            extra = {}
            if n == 0:
                extra["remote_access"] = [tool("anydesk", "AnyDesk", connection("175.45.176.71", min_rtt_ms=190.0))]
            records.append(make_record(device, minutes, input=user_input(injected=50 if n == 0 else 0), **extra))
    roster = {f"d{n:02}": roster_entry(f"d{n:02}") for n in range(25)}
    context = Context(roster, {a.name: a for a in ANCHORS}, NOW, DetectionConfig())
    return records, context


@pytest.mark.parametrize("cls", DETECTORS)
def test_init_only_stores_parameters(cls) -> None:
    detector = cls()
    for name in inspect.signature(cls.__init__).parameters:
        if name != "self":
            assert hasattr(detector, name), f"{cls.__name__}.__init__ must store {name}"
    assert not [key for key in vars(detector) if key.endswith("_")], "learned state appears only after fit"


@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_detect_contract(cls) -> None:
    records, context = _fleet()
    frames = flatten(records)
    detector = cls()
    assert detector.fit(frames, context) is detector
    found = detector.detect(frames, context)
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
