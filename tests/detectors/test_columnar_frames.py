"""Frames built from the column form of windows (``window_columns`` / ``frames_from_columns``, what
the collector's rollups store and scoring reads) are exactly the frames the per-window builder made
(the oracle: tests/detectors/per_window_frames.py, the builder as it was before), and score to the
same verdicts.

Simulated fleets (farmwatch.simulator, two seeds with the tactics that change hardware and tamper
with the agent), plus hand-made windows for what a fleet rarely shows: a device's hardware changing
and changing back, one identity twice in a window, windows received out of time order, a column an
older layout lacks.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from detector_records import make_record
from per_window_frames import frames_from_windows as per_window_frames

from farmwatch.contract import to_wire
from farmwatch.detectors.frame import (
    WINDOW_LAYOUT, Frames, flatten, frames_from_columns, packed_columns, reduce_record, unpacked_columns, window_columns,
    windows_of_columns,
)
from farmwatch.detectors.pipeline import score_frames
from farmwatch.roster import Anchor, RosterEntry, load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet

FLEETS = {"seed-21-tactics": (21, ("tampering", "kvm-reflashed")), "seed-24-stealthy": (24, ())}

KVM = {"vendor_id": "1d6b", "product_id": "0104", "manufacturer": "PiKVM", "product": "PiKVM Composite Device",
       "interface_classes": ["hid"]}
MOUSE = {"vendor_id": "046d", "product_id": "c077", "manufacturer": "Logitech", "product": "USB Optical Mouse",
         "interface_classes": ["hid"]}
SCREEN = {"name": "HDMI-1", "manufacturer": "DEL", "serial_hash": "ab" * 32}


@dataclasses.dataclass
class Fleet:
    records: list[dict[str, Any]]
    roster: list[RosterEntry]
    anchors: list[Anchor]
    now: datetime


def _hand_made() -> list[dict[str, Any]]:
    """One device whose hardware goes A, B, A (two identities, one of them twice in a window), and
    one whose windows arrive out of time order with the same hardware."""
    changing = [({"usb": [KVM, MOUSE], "displays": [SCREEN]}), ({"usb": [MOUSE, MOUSE], "displays": []}),
                ({"usb": [KVM, MOUSE], "displays": [SCREEN]}), ({"usb": [], "displays": []})]
    records = [make_record("zz-changing", seq * 5, hardware=hardware) for seq, hardware in enumerate(changing)]
    late = [make_record("zz-late", minutes, hardware={"usb": [KVM], "displays": []}) for minutes in (20, 0, 10, 5)]
    return records + late


@pytest.fixture(scope="module", params=list(FLEETS))
def fleet(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    seed, tactics = FLEETS[request.param]
    variant: dict[str, Any] = {"tactics": tactics} if tactics else {"stealthy": True}
    files = write_fleet(tmp_path_factory.mktemp(request.param), seed=seed, legit=30, farms=8, days=4, **variant)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    records.sort(key=lambda record: record["received_at"])  # as they would arrive: devices interleaved
    now = max(datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")) for r in records) + timedelta(seconds=30)
    return Fleet(records + _hand_made(), load_roster(files.roster), load_anchors(files.anchors), now)


def _assert_same_frames(expected: Frames, built: Frames) -> None:
    for field in dataclasses.fields(Frames):
        pd.testing.assert_frame_equal(getattr(built, field.name), getattr(expected, field.name), check_exact=True,
                                      obj=f"Frames.{field.name}")


def _device_hours(windows: list[Any]) -> list[list[Any]]:
    """The windows grouped as the rollups store them: by device, then hour of receipt (here: of the
    window's position, twelve at a time), in order within each."""
    by_device: dict[str, list[Any]] = defaultdict(list)
    for window in windows:
        by_device[window[0][0]].append(window)
    return [mine[start:start + 12] for device in sorted(by_device) for mine in [by_device[device]]
            for start in range(0, len(mine), 12)]


def _json(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def test_flatten_builds_the_frames_the_per_window_builder_built(fleet: Fleet) -> None:
    expected = per_window_frames(reduce_record(record) for record in fleet.records)
    built = flatten(fleet.records)
    _assert_same_frames(expected, built)
    assert len(built.usb) and len(built.displays) and len(built.tools) and len(built.probes)  # every table compared
    changing = built.usb[built.usb["device_id"] == "zz-changing"]
    assert sorted(changing["reports"]) == [2, 4]  # the KVM in windows 0 and 2, the mouse once, twice, once


def test_stored_device_hours_build_the_frames_their_windows_build(fleet: Fleet) -> None:
    """As scoring reads rollups: one column form per device-hour, through JSON, concatenated."""
    windows = _json([list(reduce_record(record)) for record in fleet.records])
    hours = _device_hours(windows)
    in_order = [window for hour in hours for window in hour]
    expected = per_window_frames(in_order)
    built = frames_from_columns(_json(window_columns(hour)) for hour in hours)
    _assert_same_frames(expected, built)


def test_verdicts_from_columns_are_the_per_window_verdicts(fleet: Fleet) -> None:
    windows = _json([list(reduce_record(record)) for record in fleet.records])
    hours = _device_hours(windows)
    expected = per_window_frames([window for hour in hours for window in hour])
    built = frames_from_columns(_json(window_columns(hour)) for hour in hours)

    def verdicts(frames: Frames) -> list[bytes]:
        return [orjson.dumps(to_wire(verdict), option=orjson.OPT_SORT_KEYS)
                for verdict in score_frames(frames, fleet.roster, fleet.anchors, fleet.now)]

    found = verdicts(built)
    assert found == verdicts(expected)
    assert any(b'"verdict":"farm"' in verdict for verdict in found)  # the fleet has farms to find


def test_the_column_form_gives_its_windows_back(fleet: Fleet) -> None:
    windows = _json([list(reduce_record(record)) for record in fleet.records[:2000]])
    for hour in _device_hours(windows):
        assert _json(windows_of_columns(_json(window_columns(hour)))) == hour


def test_a_column_an_older_layout_lacks_reads_as_not_reported() -> None:
    windows = _json([list(reduce_record(record)) for record in _hand_made() if record["report"]["device_id"] == "zz-changing"])
    stored = _json(window_columns(windows))
    del stored["reports"]["same"]["hostname"], stored["tools"]["domain"]
    assert "hostname" not in stored["reports"]["plain"]  # one value in the hour: stored once
    built = frames_from_columns([stored])
    assert built.reports["hostname"].isna().all() and len(built.reports) == len(windows)
    hostname = WINDOW_LAYOUT["reports"].index("hostname")
    assert {window[0][hostname] for window in windows_of_columns(stored)} == {None}
    _assert_same_frames(per_window_frames(windows), dataclasses.replace(
        built, reports=built.reports.assign(hostname=per_window_frames(windows).reports["hostname"])))


def test_text_values_are_pooled_one_object_per_distinct_string(fleet: Fleet) -> None:
    """Each record (and each decoded rollup) brings its own copy of the same few strings; the frames
    keep one object per distinct value, whichever way they were built."""
    windows = _json([list(reduce_record(record)) for record in fleet.records[:3000]])
    for frames in (flatten(fleet.records[:3000]),
                   frames_from_columns(_json(window_columns(hour)) for hour in _device_hours(windows))):
        for table, column in (("reports", "device_id"), ("reports", "asn_org"), ("reports", "timezone"),
                              ("probes", "target")):
            values = [value for value in getattr(frames, table)[column] if value is not None]
            assert values and len({id(value) for value in values}) == len(set(values)), (table, column)


def _packed_hours(windows: list[Any]) -> list[list[Any]]:
    """Device-hours of every length, not only twelve windows (an hour of a few windows is padded)."""
    hours = _device_hours(windows)
    return [part for hour in hours for part in ([hour[:5], hour[5:]] if len(hour) > 5 else [hour])]


def test_packed_device_hours_build_the_frames_their_windows_build(fleet: Fleet) -> None:
    """As the collector stores rollups now (packed_columns through JSON), alone and mixed with plain
    column forms (rows an earlier release stored) in one batch."""
    windows = _json([list(reduce_record(record)) for record in fleet.records])
    hours = _packed_hours(windows)
    expected = per_window_frames([window for hour in hours for window in hour])
    packed = [_json(packed_columns(window_columns(hour))) for hour in hours]
    assert any(isinstance(column, str) for column in packed[0]["reports"]["plain"].values())  # numbers packed
    assert all(isinstance(block["probes"].get("target", {}), dict) for block in packed)  # text coded
    _assert_same_frames(expected, frames_from_columns(packed))
    mixed = [block if index % 3 else _json(window_columns(hour)) for index, (hour, block) in enumerate(zip(hours, packed))]
    _assert_same_frames(expected, frames_from_columns(mixed))


def test_a_packed_form_gives_its_windows_back(fleet: Fleet) -> None:
    """What the reducer merges new windows into: the same windows, numbers as the floats frames hold."""
    windows = _json([list(reduce_record(record)) for record in fleet.records[:2000]])
    for hour in _packed_hours(windows):
        back = windows_of_columns(unpacked_columns(_json(packed_columns(window_columns(hour)))))
        assert len(back) == len(hour)
        for given, read in zip(hour, _json(back)):
            for part, columns, values, found in zip(WINDOW_LAYOUT, WINDOW_LAYOUT.values(), given, read):
                rows = [values] if part == "reports" else values
                got = [found] if part == "reports" else found
                assert len(rows) == len(got), part
                for row, row_read in zip(rows, got):
                    for name, value, value_read in zip(columns, row, row_read):
                        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(value_read, float):
                            assert float(value) == value_read, (part, name)
                        else:
                            assert value == value_read, (part, name)


def test_packing_keeps_what_it_cannot_pack_exactly_as_it_was() -> None:
    """A number column holding anything but numbers and nulls stays a list (it converts, or fails,
    as it did); a non-finite float reads as null as JSON stores it; more than 256 distinct strings
    take wider codes, mixed in one batch with one-byte ones."""
    windows = _json([list(reduce_record(record)) for record in _hand_made()])
    seq = WINDOW_LAYOUT["reports"].index("seq")
    key_events = WINDOW_LAYOUT["reports"].index("key_events")
    mouse_events = WINDOW_LAYOUT["reports"].index("mouse_events")
    hostname = WINDOW_LAYOUT["reports"].index("hostname")
    for number, window in enumerate(windows):
        window[0][key_events] = "12" if number == 1 else number
        window[0][hostname] = f"host-{number}"
    wide = [[list(window[0][:hostname]) + [f"name-{i}"] + list(window[0][hostname + 1:]), *window[1:]]
            for i, window in enumerate(windows[0] for _ in range(300))]
    for i, window in enumerate(wide):
        window[0][seq] = i
    blocks = [packed_columns(window_columns(windows[:4])), packed_columns(window_columns(windows[4:])),
              packed_columns(window_columns(wide))]
    first = blocks[0]["reports"]["plain"]
    assert first["key_events"] == [0, "12", 2, 3]  # kept: a string among the numbers
    infinite = packed_columns(window_columns(windows[4:]))
    infinite["reports"]["plain"]["mouse_events"] = packed_columns(
        {**window_columns(windows[4:]), "reports": {"same": {}, "plain": {"mouse_events": [float("inf"), 1.5, None, 2]}}}
    )["reports"]["plain"]["mouse_events"]
    built = frames_from_columns(_json(blocks))
    _assert_same_frames(per_window_frames(windows + wide), built)
    assert blocks[2]["reports"]["plain"]["hostname"]["codes"] != first["hostname"]["codes"]  # both coded
    windows_inf = [list(window) for window in windows[4:]]
    for window, value in zip(windows_inf, [None, 1.5, None, 2]):  # infinity stored by JSON: null
        window[0] = list(window[0])
        window[0][mouse_events] = value
    _assert_same_frames(per_window_frames(windows_inf), frames_from_columns(_json([infinite])))


NUMBER_FORMS = {"*": [3, 3.0, 3], "!": [1, 2, None], "%": [19.46, 0.5, None], "^": [0.0127, 1.5, 2],
                ".": [0.1 + 0.2, 1.0, 2.0], ". (signed zero)": [-0.0, 1.0, 2.0]}


@pytest.mark.parametrize("form", list(NUMBER_FORMS))
def test_numbers_are_packed_in_the_smallest_form_that_gives_every_bit_back(form: str) -> None:
    """One value for every row (3 and 3.0: differing values to JSON), int32 of a decimal scale, or
    float64 (``-0.0`` keeps its sign);
    read back alone and in a batch whose blocks chose other forms, the frames are the windows'."""
    windows = _json([list(reduce_record(record)) for record in _hand_made()])[:3]
    active = WINDOW_LAYOUT["reports"].index("active_seconds")
    mine = [[[*window[0][:active], value, *window[0][active + 1:]], *window[1:]]
            for window, value in zip(windows, NUMBER_FORMS[form])]
    packed = _json(packed_columns(window_columns(mine)))
    piece = packed["reports"]["plain"]["active_seconds"]
    assert piece[0] == form[0]
    back = unpacked_columns(packed)["reports"]["plain"]["active_seconds"]
    assert np.array_equal(np.array(back, dtype=np.float64).view(np.int64),
                          np.array(NUMBER_FORMS[form], dtype=np.float64).view(np.int64))
    others = [[[*window[0][:active], value, *window[0][active + 1:]], *window[1:]]
              for values in NUMBER_FORMS.values() for window, value in zip(windows, values)]
    blocks = [_json(packed_columns(window_columns(others[start:start + 3]))) for start in range(0, len(others), 3)]
    _assert_same_frames(per_window_frames(mine + others), frames_from_columns([packed, *blocks]))


def test_the_merge_unpacks_each_stored_form_as_frames_read_it() -> None:
    """``unpacked_columns`` (the reducer reads a stored row with it before merging into it, one piece
    at a time in plain Python) gives back the windows ``frames_from_columns`` reads from the same
    row: numbers in every tagged form, text codes one and two bytes wide."""
    windows = _json([list(reduce_record(record)) for record in _hand_made()])
    active = WINDOW_LAYOUT["reports"].index("active_seconds")
    hostname = WINDOW_LAYOUT["reports"].index("hostname")
    forms = [[[*window[0][:active], value, *window[0][active + 1:]], *window[1:]]
             for values in NUMBER_FORMS.values() for window, value in zip(windows, values)]
    wide = [[[*windows[0][0][:hostname], f"name-{i}", *windows[0][0][hostname + 1:]], *windows[0][1:]] for i in range(300)]
    rows = [*(_json(packed_columns(window_columns(forms[start:start + 3]))) for start in range(0, len(forms), 3)),
            _json(packed_columns(window_columns(wide)))]
    assert isinstance(rows[-1]["reports"]["plain"]["hostname"]["codes"], str)
    for row in rows:
        _assert_same_frames(frames_from_columns([row]), per_window_frames(_json(windows_of_columns(unpacked_columns(row)))))


def test_a_stored_block_may_list_its_rows_out_of_window_order(fleet: Fleet) -> None:
    """A list part whose ``window`` list is not in window order (a stored block, as ``packed_columns``
    keeps one) gives each window's rows in the order stored, as the windows' own: here the windows'
    rows listed from the last window back, each window's rows in their order."""
    windows = _json([list(reduce_record(record)) for record in fleet.records[:40]])
    block = window_columns(windows)
    for part in ("tools", "probes"):
        stored = block[part]
        rows = sorted(range(len(stored["window"])), key=lambda row: -stored["window"][row])  # stable: in order within a window
        block[part] = {name: [values[row] for row in rows] for name, values in stored.items()}
        assert block[part]["window"] != sorted(block[part]["window"]) and len(set(block[part]["window"])) > 1
    built = frames_from_columns([_json(packed_columns(block))])
    _assert_same_frames(per_window_frames(windows), built)
    assert len(built.probes) and len(built.tools)
