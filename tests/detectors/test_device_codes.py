"""Device codes and runs: the integer view of ``Frames.reports`` detectors group and join on instead of
device id strings (farmwatch.detectors.base.device_runs / device_ids)."""

from __future__ import annotations

import numpy as np
from detector_records import make_record

from farmwatch.detectors.base import device_ids, device_runs
from farmwatch.detectors.frame import flatten


def test_each_device_is_one_run_of_rows_in_id_order() -> None:
    records = [make_record(device, seq) for device, seq in (("b", 0), ("a", 5), ("c", 0), ("a", 0), ("b", 5),
                                                            ("b", 10))]
    reports = flatten(records).reports
    first, count = device_runs(reports["device_code"].to_numpy())
    assert first.tolist() == [0, 2, 5] and count.tolist() == [2, 3, 1]
    assert list(device_ids(reports)) == ["a", "b", "c"]
    for code, (at, n) in enumerate(zip(first, count)):
        assert set(reports["device_id"].iloc[at:at + n]) == {device_ids(reports)[code]}


def test_runs_of_filtered_rows_skip_devices_without_rows() -> None:
    codes = np.array([0, 0, 2, 2, 2, 5])  # devices 1, 3 and 4 filtered out
    first, count = device_runs(codes)
    assert first.tolist() == [0, 2, 5] and count.tolist() == [2, 3, 1]
    assert codes[first].tolist() == [0, 2, 5]


def test_no_rows_no_runs() -> None:
    first, count = device_runs(np.array([], dtype=np.int64))
    assert len(first) == 0 and len(count) == 0
    assert len(device_ids(flatten([]).reports)) == 0
