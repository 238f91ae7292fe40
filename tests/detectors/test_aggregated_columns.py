"""aggregated_columns: named aggregation's frame from each column's own reduction (issue 12: the
detectors call it once per part of every scoring batch, and named aggregation planned itself anew
each time). Its promise is the frame ``.agg(**columns)`` gives, to the dtype, index and order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from farmwatch.detectors.base import aggregated_columns

REDUCTIONS = {
    "rows": ("value", "size"), "total": ("flag", "sum"), "share": ("flag", "mean"), "any": ("flag", "any"),
    "first_text": ("text", "first"), "distinct": ("value", "nunique"), "low": ("value", "min"),
    "high": ("value", "max"), "since": ("time", "min"), "until": ("time", "max"),
}


def _rows(count: int) -> pd.DataFrame:
    """Groups of uneven size, missing keys (left out by both), missing numbers, text and times."""
    generator = np.random.default_rng(7)
    keys = generator.integers(0, 6, count).astype(float)
    keys[::9] = np.nan
    values = generator.normal(size=count)
    values[::4] = np.nan
    texts = np.array([None if i % 3 == 0 else f"t{i % 5}" for i in range(count)], dtype=object)
    times = pd.Timestamp("2026-11-02T18:00:00Z") + pd.to_timedelta(generator.integers(0, 10_000, count), unit="s")
    return pd.DataFrame({"key": keys, "other": generator.integers(0, 2, count), "value": values,
                         "flag": generator.random(count) < 0.4, "text": texts, "time": times})


@pytest.mark.parametrize("count", [0, 1, 50, 2_000])
@pytest.mark.parametrize("keys", [["key"], ["key", "other"]])
def test_the_named_aggregations_frame(count: int, keys: list[str]) -> None:
    rows = _rows(count)
    for sort in (True, False):
        expected = rows.groupby(keys, sort=sort).agg(**REDUCTIONS)
        found = aggregated_columns(rows.groupby(keys, sort=sort), **REDUCTIONS)
        pdt.assert_frame_equal(found, expected)
        pdt.assert_frame_equal(found.reset_index(), expected.reset_index())


def test_size_counts_rows_whatever_is_missing() -> None:
    rows = pd.DataFrame({"key": [1, 1, 2], "value": [np.nan, np.nan, 3.0]})
    found = aggregated_columns(rows.groupby("key"), rows=("value", "size"), present=("value", "count"))
    assert found["rows"].tolist() == [2, 1] and found["present"].tolist() == [0, 1]
