"""Flatten ingest records (wire JSON dicts) into the pandas frames every detector reads.

Speed matters here (a million records must score in well under a minute on two cores), so each
record is walked once in plain Python into a row tuple holding only the fields detectors read;
pandas only sees whole columns. List sections become their own long tables keyed by ``rec`` (the
record's row in ``reports``). USB devices and displays barely change between reports, so they are
folded per device into first/last/count rows instead of being repeated a million times.

Missing sections and unknown values become None/NaN: a detector treats "not reported" as absent,
never as evidence.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from farmwatch.contract import EARLIEST, LATEST
from farmwatch.errors import FarmwatchError

# The fields detectors read, by report section (everything else in a record is skipped).
_HOST = ("timezone", "utc_offset_minutes", "locale")
_INPUT = (
    "active_seconds",
    "key_events",
    "mouse_events",
    "injected_events",
    "key_interval_ms_p10",
    "key_interval_ms_p50",  # p50/p90 since issue 16: key timing too regular for hands (IP-KVM paste)
    "key_interval_ms_p90",
    "key_burst_fraction",
    "mouse_rate_hz_median",
    "mouse_jump_fraction",
)
_NETWORK = ("gateway_ip", "gateway_mac_hash", "wifi_bssid_hash", "lan_neighbors")
_GEO = ("country", "asn", "asn_org", "network_kind")
_REPORT_COLUMNS = (
    ("device_id", "seq", "source_ip", "hardware_id", "window_start", "window_end")
    + _GEO
    + _HOST
    + ("keyboard_layouts", "input_methods")
    + _NETWORK
    + ("vpn_product", "has_vpn_interface")
    + _INPUT
    + ("virtual_devices", "has_input")
    + ("os", "hostname", "clock_skew_seconds")  # agent_health: identity and clock (issue 16)
    # agent_health (issue 16): host.boot_time as sent (text), the collector's enrolment and
    # refused-seq counts when it stored the record (ingest record ``enrolments``, ``seq_conflicts``)
    + ("boot_time", "enrolments", "seq_conflicts")
)
_TOOL_COLUMNS = (
    "rec", "tool", "process", "started_at", "listening", "matched_by",  # matched_by: "path;domain"
    "remote_ip", "remote_port", "local_port", "state", "direction", "rtt_ms", "min_rtt_ms", "domain",
    "first_seen", "last_seen", "duration_seconds",  # the agent's socket watcher (issue 16); null from older agents
)
_SESSION_COLUMNS = ("rec", "kind", "user", "remote_ip", "rtt_ms", "min_rtt_ms",
                    "state", "first_seen", "last_seen", "duration_seconds")  # issue 16, as on connections
_ENDED = "CLOSED"  # the state of a connection or session the watcher saw end inside its window
_PROBE_COLUMNS = ("rec", "target", "sent", "received", "rtt_min_ms", "rtt_median_ms")
_USB_KEY = ("device_id", "vendor_id", "product_id", "manufacturer", "product")
_DISPLAY_KEY = ("device_id", "name", "manufacturer", "serial_hash")

_EMPTY: dict[str, Any] = {}
# The times of a record, as the contract bounds them (farmwatch.contract: EARLIEST..LATEST, as ingest
# refuses); a stored record outside them (written before the bounds existed, restored, tampered
# with) is refused by reduce_record, so no such time reaches any frame (a window_end in 2262 once
# broke every scoring run and skewed the fleet's last report time).
# Each: (field as the contract names it, its column in the window part).
_REPORT_TIMES = (("report.window_start", _REPORT_COLUMNS.index("window_start")),
                 ("report.window_end", _REPORT_COLUMNS.index("window_end")),
                 ("report.host.boot_time", _REPORT_COLUMNS.index("boot_time")))
_TOOL_TIMES = (("report.remote_access[].started_at", _TOOL_COLUMNS.index("started_at") - 1),
               ("report.remote_access[].connections[].first_seen", _TOOL_COLUMNS.index("first_seen") - 1),
               ("report.remote_access[].connections[].last_seen", _TOOL_COLUMNS.index("last_seen") - 1))
_SESSION_TIMES = (("report.sessions[].first_seen", _SESSION_COLUMNS.index("first_seen") - 1),
                  ("report.sessions[].last_seen", _SESSION_COLUMNS.index("last_seen") - 1))


@dataclass
class Frames:
    """The flattened records.

    ``reports``: one row per record, sorted by device and window end (index 0..n-1 = ``rec``);
    ``hour`` is the window end in whole hours since the epoch; ``device_code`` the device as an
    integer, 0.. in device id order (a child table's rows: ``reports["device_code"]`` at their ``rec``).
    ``tools``: one row per remote-access connection (a tool without connections: one row, no peer);
    ``matched_by`` says how the agent recognised the tool (``;``-joined; ``name`` for reports from
    agents before it was reported), ``domain`` the catalogued relay domain of the peer; ``live`` marks
    connections established in the window: still at its end, or ``state`` ``CLOSED`` (ended inside
    it, seen by the agent's socket watcher). ``first_seen``/``last_seen`` (RFC 3339 text) and
    ``duration_seconds`` are the watcher's, null from older agents; sessions carry them too, with
    ``state`` (null from older agents: established at the window's end).
    ``sessions``, ``probes``: one row per entry. ``usb``, ``displays``: one row per device and
    identity, with ``first_rec``/``last_rec``/``reports``.
    """

    reports: pd.DataFrame
    tools: pd.DataFrame
    sessions: pd.DataFrame
    probes: pd.DataFrame
    usb: pd.DataFrame
    displays: pd.DataFrame

    def times(self, table: pd.DataFrame, column: str = "rec") -> pd.Series:
        """The window end of the record each row of ``table`` came from."""
        recs = table[column].to_numpy(dtype="int64")
        return pd.Series(self.reports["window_end"].array.take(recs), index=table.index)


class RecordError(FarmwatchError, ValueError):
    """An ingest record that lacks what every detector relies on; the message names the record."""


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk step.

    Millions of small containers (parsed records, then the strings in object columns) make the
    collector rescan the whole heap again and again; records form no reference cycles, so reference
    counting frees them, and anything cyclic left by the step is collected once it ends.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class Window(NamedTuple):
    """One ingest record reduced to the fields detectors read, as plain JSON values: the unit the
    collector stores in its rollups (:mod:`farmwatch.collector.rollups`) and :func:`frames_from_windows`
    builds frames from. Column order: :data:`WINDOW_LAYOUT`."""

    row: Sequence[Any]  # one value per report column
    tools: Sequence[Sequence[Any]]  # one per remote-access connection (a tool without any: one, no peer)
    sessions: Sequence[Sequence[Any]]
    probes: Sequence[Sequence[Any]]
    usb: Sequence[Sequence[Any]]  # the hardware identities of the report
    displays: Sequence[Sequence[Any]]


WINDOW_LAYOUT: dict[str, tuple[str, ...]] = {
    "reports": _REPORT_COLUMNS, "tools": _TOOL_COLUMNS[1:], "sessions": _SESSION_COLUMNS[1:],
    "probes": _PROBE_COLUMNS[1:], "usb": _USB_KEY[1:], "displays": _DISPLAY_KEY[1:],
}
"""The columns of each part of a :class:`Window`, in order."""


def flatten(records: Iterable[dict[str, Any]]) -> Frames:
    """Reduce every record (:func:`reduce_record`) and build :class:`Frames`. Raises
    :class:`RecordError` on a record without ``report.device_id`` or ``report.window_end``."""
    with paused_gc():
        return frames_from_windows(reduce_record(record, f"record {rec + 1}") for rec, record in enumerate(records))


def reduce_record(record: dict[str, Any], where: str = "record") -> Window:
    """The fields of one ingest record that detectors read; ``where`` names it in a RecordError,
    raised also for a time outside the contract's bounds (the message names the field)."""
    report = record.get("report")
    if not isinstance(report, dict) or not report.get("device_id") or not report.get("window_end"):
        raise RecordError(f"{where}: report.device_id and report.window_end are required")
    agent = report.get("agent") or _EMPTY
    host = report.get("host") or _EMPTY
    network = report.get("network") or _EMPTY
    given = report.get("input")
    inp = given or _EMPTY
    vpn = [i for i in network.get("interfaces") or () if i.get("kind") == "vpn"]
    geo = record.get("geo") or _EMPTY
    # report.agent.hardware_id since issue 16 (older agents send none: absent = unknown).
    hardware_id = record.get("hardware_id") or report.get("hardware_id") or agent.get("hardware_id")
    row = (
        report["device_id"], report.get("seq"), record.get("source_ip"), hardware_id,
        report.get("window_start"), report["window_end"],
        *map(geo.get, _GEO),
        *map(host.get, _HOST),
        ";".join(host.get("keyboard_layouts") or ()),
        ";".join(host.get("input_methods") or ()),
        *map(network.get, _NETWORK),
        next((i.get("vpn_product") for i in vpn if i.get("vpn_product")), None),
        bool(vpn),
        *map(inp.get, _INPUT),
        ";".join(inp.get("virtual_devices") or ()),
        given is not None,
        agent.get("os"), agent.get("hostname"), record.get("clock_skew_seconds"),
        host.get("boot_time"), record.get("enrolments"), record.get("seq_conflicts"),
    )
    tools = []
    for tool in report.get("remote_access") or ():
        head = (tool.get("tool"), tool.get("process"), tool.get("started_at"), len(tool.get("listening") or ()),
                ";".join(tool.get("matched_by") or ("name",)))
        for connection in tool.get("connections") or (_EMPTY,):
            tools.append((*head, *map(connection.get, _TOOL_COLUMNS[6:])))
    sessions = [tuple(map(session.get, _SESSION_COLUMNS[1:])) for session in report.get("sessions") or ()]
    probes = [tuple(map(probe.get, _PROBE_COLUMNS[1:])) for probe in network.get("probes") or ()]
    hardware = report.get("hardware") or _EMPTY
    usb = [tuple(map(item.get, _USB_KEY[1:])) for item in hardware.get("usb") or ()]
    displays = [tuple(map(item.get, _DISPLAY_KEY[1:])) for item in hardware.get("displays") or ()]
    _check_times(where, [row], _REPORT_TIMES)
    _check_times(where, tools, _TOOL_TIMES)
    _check_times(where, sessions, _SESSION_TIMES)
    return Window(row, tools, sessions, probes, usb, displays)


def _check_times(where: str, rows: Sequence[Sequence[Any]], times: tuple[tuple[str, int], ...]) -> None:
    """Raise RecordError naming the first time in ``rows`` the contract refuses (null: not reported)."""
    for row in rows:
        for name, index in times:
            value = row[index]
            if value is not None and not _within_bounds(value):
                raise RecordError(f"{where}: {name} {value!r} is not a time from {EARLIEST.isoformat()} "
                                  f"to before {LATEST.isoformat()} (the contract's bounds)")


def _within_bounds(value: Any) -> bool:
    try:
        moment = datetime.fromisoformat(str(value))
        return moment.tzinfo is not None and EARLIEST <= moment < LATEST
    except (ValueError, OverflowError):  # not RFC 3339, or no UTC form (9999-12-31T23:30:00-05:00)
        return False


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


def _utc(values: Any) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601", errors="coerce")


_NUMERIC = frozenset(_INPUT + ("utc_offset_minutes", "lan_neighbors", "seq", "asn", "rtt_ms", "min_rtt_ms",
                               "rtt_min_ms", "rtt_median_ms", "sent", "received", "duration_seconds",
                               "enrolments", "seq_conflicts"))
_INTEGER = frozenset(("rec", "listening"))
_BOOLEAN = frozenset(("has_vpn_interface", "has_input"))
_PARSED_TIMES = ("window_start", "window_end")


def _column(name: str, values: Sequence[Any]) -> Any:
    if name in _NUMERIC:
        return np.array(values, dtype=np.float64)  # None becomes NaN
    if name in _INTEGER:
        return np.array(values, dtype=np.int64)
    if name in _BOOLEAN:
        return np.array(values, dtype=bool)
    if name in _PARSED_TIMES:
        return _utc(values).array
    return np.array(values, dtype=object)


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
