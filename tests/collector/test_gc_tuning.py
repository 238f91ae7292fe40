"""The collector's long-running processes freeze what they built at start and collect less often."""

from __future__ import annotations

import gc

from farmwatch.collector.gc_tuning import THRESHOLDS, settle_long_lived


def test_settling_freezes_the_start_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    kept = [{"built": "at start"}]  # a container alive when settling: frozen with the rest
    try:
        settle_long_lived()
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert not any(item is kept for item in gc.get_objects())  # frozen objects are in no generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
