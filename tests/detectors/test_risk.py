"""The risk combiner: pinned arithmetic, and every verdict explained by its own findings."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from farmwatch.contract import Finding
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.risk import combine, label


def _f(detector: str, score: float) -> Finding:
    return Finding(detector=detector, severity="info", score=score, summary="x.", evidence={}, attack=None,
                   first_seen=None, last_seen=None)


@pytest.mark.parametrize(
    ("findings", "risk"),
    [
        pytest.param([], 0.0, id="nothing"),
        pytest.param([_f("remote_access", 0.6)], 0.6, id="one-strong"),
        pytest.param([_f("remote_access", 0.6), _f("input_rhythm", 0.5)], 0.8, id="independent-compound"),
        pytest.param([_f("location_proof", 0.6), _f("location_proof", 0.5)], 0.6, id="same-group-counts-once"),
        pytest.param([_f("host_mismatch", 0.3), _f("working_hours", 0.4)], 0.3, id="weak-alone-capped"),
        pytest.param([_f("remote_access", 0.5), _f("host_mismatch", 0.3), _f("working_hours", 0.4)],
                     1 - 0.5 * 0.7 * 0.6, id="weak-corroborated"),
        pytest.param([_f("remote_access", 0.2), _f("working_hours", 0.4)], 1 - 0.8 * 0.7, id="too-weak-to-corroborate"),
        pytest.param([_f("unknown_detector", 0.3)], 0.3, id="unknown-detector-own-strong-group"),
    ],
)
def test_combine(findings, risk) -> None:
    assert combine(findings) == pytest.approx(risk, abs=1e-4)


@pytest.mark.parametrize(("risk", "verdict"), [(0.0, "clear"), (0.49, "clear"), (0.5, "review"), (0.79, "review"),
                                               (0.8, "farm"), (1.0, "farm")])
def test_label_thresholds(risk, verdict) -> None:
    assert label(risk) == verdict


def test_thresholds_come_from_config() -> None:
    strict = DetectionConfig(review_threshold=0.2, farm_threshold=0.3)
    assert label(0.25, strict) == "review" and label(0.35, strict) == "farm"


def test_every_verdict_is_explained_by_its_findings(tmp_path) -> None:
    """On a simulated fleet: recomputing risk from each verdict's findings gives its risk and verdict."""
    import orjson

    from farmwatch.detectors.pipeline import score
    from farmwatch.roster import load_anchors, load_roster
    from farmwatch.simulator.cli import write_fleet

    files = write_fleet(tmp_path, seed=5, legit=40, farms=10, days=2)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    config = DetectionConfig(corporate_networks=("198.51.100.0/24",))
    verdicts = score(records, load_roster(files.roster), load_anchors(files.anchors),
                     datetime(2026, 11, 4, tzinfo=timezone.utc), config)
    assert len(verdicts) == 50
    assert {v.verdict for v in verdicts} >= {"clear", "farm"}
    for verdict in verdicts:
        assert combine(verdict.findings, config) == verdict.risk
        assert label(verdict.risk, config) == verdict.verdict
        assert all(f.score > 0 for f in verdict.findings)
        if verdict.risk > 0:
            assert verdict.findings
