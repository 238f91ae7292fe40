"""The newest ``geo.network_kind`` of each scored device (the fleet index's), as score_devices takes it
from a part's frames: the kind of the device's last row (rows are sorted by device, then window end),
left out when that newest one is missing, and only for the devices asked for."""

from __future__ import annotations

import dataclasses

import pandas as pd

from farmwatch.collector.incremental import _newest_network_kinds
from farmwatch.detectors.frame import frames_from_columns


def _frames(rows: list[tuple[str, str | None]]) -> object:
    """Frames whose reports hold ``rows`` (device, network kind), already in frame order."""
    reports = pd.DataFrame(rows, columns=["device_id", "network_kind"])
    reports["device_code"] = pd.factorize(reports["device_id"])[0]
    return dataclasses.replace(frames_from_columns([]), reports=reports)


def test_each_wanted_devices_last_row() -> None:
    frames = _frames([("a", "residential"), ("a", "corporate"), ("b", "mobile"), ("d", "hosting"),
                      ("d", "vpn"), ("e", "hosting")])
    kinds = _newest_network_kinds(frames, {"a", "d", "e", "z"})  # type: ignore[arg-type]
    # a, d: their newest; b: not asked for; z: no rows
    assert kinds == {"a": "corporate", "d": "vpn", "e": "hosting"}
    assert list(kinds) == ["a", "d", "e"]


def test_a_device_whose_newest_kind_is_missing_is_left_out() -> None:
    """The frame's text column holds a missing kind as NaN: the device is left out (the fleet index
    then shows no kind), never the text "nan"; an older kind does not stand in for it."""
    rows = [("a", "residential"), ("a", None), ("b", None), ("b", "mobile"), ("c", None), ("d", "vpn")]
    frames = _frames(rows)
    assert pd.isna(frames.reports["network_kind"].iloc[1])  # type: ignore[attr-defined]
    assert _newest_network_kinds(frames, {"a", "b", "c"}) == {"b": "mobile"}  # type: ignore[arg-type]


def test_no_rows() -> None:
    assert _newest_network_kinds(_frames([]), {"a"}) == {}  # type: ignore[arg-type]
