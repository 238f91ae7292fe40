"""pipeline.score: one verdict per device seen, configuration reaching the detectors, clear config errors."""

from __future__ import annotations

from datetime import datetime

import pytest
from detector_records import NOW, connection, make_record, roster_entry, tool, user_input

from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.pipeline import score

ANYDESK = [tool("anydesk", "AnyDesk", connection("175.45.176.71"))]


def _records() -> list[dict]:
    return [make_record("b", 5, input=user_input()), make_record("a", 0, remote_access=ANYDESK, input=user_input(injected=9))]


def test_one_verdict_per_device_sorted_with_roster_identity() -> None:
    verdicts = score(_records(), [roster_entry("a", employee="E7")], [], NOW)
    assert [v.device_id for v in verdicts] == ["a", "b"]
    assert verdicts[0].employee_id == "E7" and verdicts[1].employee_id is None
    assert verdicts[0].scored_at == NOW and verdicts[1].verdict == "clear" and verdicts[1].findings == []


def test_detector_parameters_come_from_config() -> None:
    config = DetectionConfig(detectors={"remote_access": {"controlled_session": 0.9, "public_inbound": 0.0}})
    [finding] = [f for f in score(_records(), [], [], NOW, config)[0].findings if f.detector == "remote_access"]
    assert finding.score == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("detectors", "message"),
    [
        pytest.param({"nope": {}}, "no detector named 'nope'", id="unknown-detector"),
        pytest.param({"ipkvm": {"known_scor": 1.0}}, "'ipkvm' has no parameter(s) known_scor", id="misspelt-parameter"),
    ],
)
def test_config_errors_name_the_detector_and_parameter(detectors, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        score(_records(), [], [], NOW, DetectionConfig(detectors=detectors))


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        score(_records(), [], [], datetime(2026, 11, 25))


def test_record_order_does_not_matter(tmp_path) -> None:
    import random

    import orjson

    from farmwatch.roster import load_anchors, load_roster
    from farmwatch.simulator.cli import write_fleet

    files = write_fleet(tmp_path, seed=12, legit=30, farms=8, days=2)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    roster, anchors = load_roster(files.roster), load_anchors(files.anchors)
    in_order = score(records, roster, anchors, NOW)
    random.Random(4).shuffle(records)
    assert score(records, roster, anchors, NOW) == in_order
    assert any(v.verdict == "farm" for v in in_order)
