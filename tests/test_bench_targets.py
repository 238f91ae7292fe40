"""bench/detection_quality.py checks the targets its docstring states (the run itself is a benchmark)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # the script imports its sibling report.py, as when run from bench/
QUALITY = runpy.run_path(str(BENCH / "detection_quality.py"))


def _figures(**changed: float) -> dict[str, float]:
    good = {"recall (farm)": 0.97, "recall (farm or review)": 1.0, "legit called farm": 0.0, "legit sent to review": 0.02}
    return {**good, **changed}


def test_figures_within_every_target_miss_nothing() -> None:
    assert QUALITY["missed"](_figures()) == []


def test_each_target_is_checked_in_its_direction() -> None:
    missed = QUALITY["missed"](_figures(**{"recall (farm)": 0.9, "legit sent to review": 0.05}))
    assert missed == ["recall (farm) 0.900 (target >= 0.95)", "legit sent to review 0.050 (target <= 0.03)"]
    assert set(QUALITY["TARGETS"]) == {"recall (farm)", "recall (farm or review)", "legit called farm",
                                       "legit sent to review"}


def test_the_variants_are_held_to_issue_16s_targets() -> None:
    targets = QUALITY["VARIANT_TARGETS"]
    assert QUALITY["missed"](_figures(), targets) == []
    missed = QUALITY["missed"](_figures(**{"recall (farm or review)": 0.99, "legit called farm": 1 / 850}), targets)
    assert missed == ["recall (farm or review) 0.990 (target >= 1)", "legit called farm 0.001 (target <= 0)"]
    assert len(QUALITY["VARIANT_SEEDS"]) >= 5 and QUALITY["TACTICS_TUNING_SEED"] not in QUALITY["VARIANT_SEEDS"]
