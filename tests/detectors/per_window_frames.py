"""The per-window frame builder as it was before the columnar one (farmwatch.detectors.frame at
a9d352a: ``frames_from_windows`` and its helpers, copied), kept only as the oracle the columnar
builder is compared with (tests/detectors/test_columnar_frames.py): every window walked in Python,
its strings pooled, its row transposed into columns, its hardware folded per device.

When :func:`farmwatch.detectors.frame._frames` gains a column, add it to :func:`_frames` here too:
the equality test then fails until both agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from farmwatch.detectors.frame import (
    _DISPLAY_KEY, _ENDED, _PROBE_COLUMNS, _REPORT_COLUMNS, _SESSION_COLUMNS, _TOOL_COLUMNS, _USB_KEY, Frames,
    RecordError, _column,
)


def frames_from_windows(windows: Iterable[Sequence[Any]]) -> Frames:
    """Build :class:`Frames` from reduced windows (:class:`Window`, or the lists JSON gives back),
    in the order given (ties of device, window end and seq keep it)."""
    rows: list[tuple[Any, ...]] = []
    tools: list[tuple[Any, ...]] = []
    sessions: list[tuple[Any, ...]] = []
    probes: list[tuple[Any, ...]] = []
    usb: dict[tuple[Any, ...], list[int]] = {}
    displays: dict[tuple[Any, ...], list[int]] = {}
    last_hardware: dict[str, tuple[Any, list[list[int]]]] = {}
    # Every record brings its own copy of the same few strings (device ids, networks, time zones);
    # keeping one object per distinct value roughly halves the frames' memory at fleet scale.
    pool: dict[str, str] = {}
    keep = pool.setdefault
    for rec, (row, window_tools, window_sessions, window_probes, window_usb, window_displays) in enumerate(windows):
        row = _pooled(row, keep)
        rows.append(row)
        device = row[0]
        if window_tools:  # most windows have none: an empty extend still costs a generator
            tools.extend(_pooled((rec, *tool), keep) for tool in window_tools)
        if window_sessions:
            sessions.extend(_pooled((rec, *session), keep) for session in window_sessions)
        # A probe's one string is its target: pooled alone, four times cheaper than _pooled, and
        # probes are most of the list rows (several anchors per report).
        if window_probes:
            probes.extend((rec, keep(target, target) if type(target) is str else target, *rest)
                          for target, *rest in window_probes)
        hardware = (window_usb, window_displays)
        previous = last_hardware.get(device)
        if previous is not None and previous[0] == hardware:  # unchanged since this device's last report
            for recs in previous[1]:
                recs.append(rec)
            continue
        folded = [_fold(usb, (device, *item)) for item in window_usb]
        folded += [_fold(displays, (device, *item)) for item in window_displays]
        for recs in folded:
            recs.append(rec)
        last_hardware[device] = (hardware, folded)
    return _frames(rows, tools, sessions, probes, usb, displays)


def _pooled(values: Iterable[Any], keep: Callable[[str, str], str]) -> tuple[Any, ...]:
    """``values`` with each string replaced by the first equal string the pool holds (``keep``: the
    pool's ``setdefault``); other values pass through (1, 1.0 and True are equal dict keys, so pooling
    them would change their type). One comprehension per row rather than a Python call per value:
    py-spy showed the per-value call as 5 % of ``farmwatch-detect`` on a million records."""
    return tuple([keep(value, value) if type(value) is str else value for value in values])


def _fold(seen: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...]) -> list[int]:
    """The list of records holding hardware identity ``key`` (created empty on first sight)."""
    recs = seen.get(key)
    if recs is None:
        recs = seen[key] = []
    return recs


_TRANSPOSED_ROWS = 65_536  # rows moved into columns at a time: a few MB of pointers


def _table(rows: list[tuple[Any, ...]], columns: tuple[str, ...]) -> pd.DataFrame:
    """Columns from row tuples, each converted once (numbers to float64 with NaN for null).

    Consumes ``rows`` (the list is emptied): they are moved into one list per column a slice at a
    time (``zip``, at C speed: an ``itemgetter`` call per value was 6 % of ``farmwatch-detect`` on a
    million records), each slice's tuples freed as it goes, and each column's list freed once it is
    an array, so the rows, a full transposed copy and the arrays never all exist at once."""
    values: list[list[Any]] = [[] for _ in columns]
    while rows:
        for column, part in zip(values, zip(*rows[:_TRANSPOSED_ROWS])):
            column.extend(part)
        del rows[:_TRANSPOSED_ROWS]
    arrays = {}
    for index, name in enumerate(columns):
        arrays[name], values[index] = _column(name, values[index]), []
    return pd.DataFrame(arrays, copy=False)


def _frames(
    rows: list[tuple[Any, ...]],
    tools: list[tuple[Any, ...]],
    sessions: list[tuple[Any, ...]],
    probes: list[tuple[Any, ...]],
    usb: dict[tuple[Any, ...], list[int]],
    displays: dict[tuple[Any, ...], list[int]],
) -> Frames:
    # Largest list first: each is freed once it is a table, which lowers the peak for the next.
    probe_table = _table(probes, _PROBE_COLUMNS)
    tool_table = _table(tools, _TOOL_COLUMNS)
    session_table = _table(sessions, _SESSION_COLUMNS)
    window_ends = list(map(itemgetter(_REPORT_COLUMNS.index("window_end")), rows))
    reports = _table(rows, _REPORT_COLUMNS)
    unreadable = reports["window_end"].isna().to_numpy()
    if unreadable.any():
        first = int(unreadable.argmax())
        raise RecordError(f"record {first + 1}: report.window_end is not an RFC 3339 time: {window_ends[first]!r}")
    del window_ends
    # Sort once so every detector sees each device's records in time order; remap child tables.
    order = reports.sort_values(["device_id", "window_end", "seq"], kind="stable").index.to_numpy()
    reports = reports.iloc[order].reset_index(drop=True)
    # Whole hours since the epoch: a cheap integer key for "at the same time" joins.
    reports["hour"] = ((reports["window_end"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(hours=1)).astype("int64")
    # The device as an integer, 0.. in device id order (the rows are sorted by device): detectors
    # group, join and compare on it instead of hashing the id string of every row.
    reports["device_code"] = pd.factorize(reports["device_id"].to_numpy())[0]
    new_rec = np.empty(len(order), dtype=np.int64)
    new_rec[order] = np.arange(len(order))
    devices = reports["device_id"].to_numpy()

    def child(table: pd.DataFrame) -> pd.DataFrame:
        table["rec"] = new_rec[table["rec"].to_numpy()]
        table["device_id"] = devices[table["rec"].to_numpy()]
        return table.sort_values("rec", kind="stable").reset_index(drop=True)

    tool_frame = child(tool_table)
    # A live session is a TCP connection with a known peer established in the window (still at its
    # end, or ended inside it).
    tool_frame["live"] = (tool_frame["state"].astype(str).str.upper().isin(("ESTABLISHED", _ENDED))
                          & tool_frame["remote_ip"].notna())
    return Frames(
        reports=reports,
        tools=tool_frame,
        sessions=child(session_table),
        probes=child(probe_table),
        usb=_folded(usb, _USB_KEY, new_rec),
        displays=_folded(displays, _DISPLAY_KEY, new_rec),
    )


def _folded(seen: dict[tuple[Any, ...], list[int]], key: tuple[str, ...], new_rec: Any) -> pd.DataFrame:
    rows = []
    for identity, recs in seen.items():
        renumbered = new_rec[recs]
        rows.append(identity + (int(renumbered.min()), int(renumbered.max()), len(recs)))
    return pd.DataFrame(rows, columns=list(key) + ["first_rec", "last_rec", "reports"])
