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

import binascii
import gc
import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import chain, count, islice, repeat
from operator import attrgetter
from pathlib import Path
from types import GenericAlias
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import numpy as np
import orjson

from farmwatch.errors import FarmwatchError
from farmwatch.times import EARLIEST, LATEST

if TYPE_CHECKING:
    # pandas is imported in the functions that build frames, not here: farmwatch-detect's reading
    # processes fork once this module is imported, and reduce their parts without pandas (its
    # import, ~0.2 s, then runs in the main process while they read, not before they start).
    import pandas as pd

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
        import pandas as pd
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


def flatten(records: Iterable[dict[str, Any] | msgspec.Struct]) -> Frames:
    """Reduce every record (:func:`reduce_record`: ingest records as dicts, or as
    :func:`read_records` parses them) and build :class:`Frames`. Raises :class:`RecordError` on a
    record without ``report.device_id`` or ``report.window_end``."""
    with paused_gc():
        return frames_from_windows(map(reduce_record, records, count(1)))  # each named by its number, 1..


def _section(name: str, fields: Sequence[str], *nested: tuple[str, Any]) -> Any:
    """A msgspec type holding only ``fields`` (any JSON value, absent: None) and ``nested`` typed
    ones of a record's section; every other key is skipped by the parser, never built."""
    return msgspec.defstruct(name, [(field, Any, None) for field in fields]
                             + [(field, kind, None) for field, kind in nested], gc=False)


def _optional(kind: Any) -> Any:
    """``kind | None``, a section that may be null or absent."""
    return kind | None


def _list_of(kind: Any) -> Any:
    """``list[kind] | None``, a list of sections that may be null or absent."""
    return _optional(GenericAlias(list, (kind,)))


# The part of an ingest record the reduction reads, as msgspec types (the field lists above are
# their single source). Decoding into them parses every byte (a broken line is still refused) but
# builds only these values: about a quarter of the time orjson takes to build the whole record.
_Geo = _section("Geo", _GEO)
_Host = _section("Host", _HOST + ("keyboard_layouts", "input_methods", "boot_time"))
_Interface = _section("Interface", ("kind", "vpn_product"))
_Probe = _section("Probe", _PROBE_COLUMNS[1:])
_Network = _section("Network", _NETWORK, ("interfaces", _list_of(_Interface)), ("probes", _list_of(_Probe)))
_Input = _section("Input", _INPUT + ("virtual_devices",))
_Agent = _section("Agent", ("os", "hostname", "hardware_id"))
_Connection = _section("Connection", _TOOL_COLUMNS[6:])
_Tool = _section("Tool", _TOOL_COLUMNS[1:4] + ("listening", "matched_by"), ("connections", _list_of(_Connection)))
_Session = _section("Session", _SESSION_COLUMNS[1:])
_Usb = _section("Usb", _USB_KEY[1:])
_Display = _section("Display", _DISPLAY_KEY[1:])
_HardwareSection = _section("Hardware", (), ("usb", _list_of(_Usb)), ("displays", _list_of(_Display)))
_Report = _section("Report", ("device_id", "seq", "window_start", "window_end", "hardware_id"),
                   ("agent", _optional(_Agent)), ("host", _optional(_Host)), ("network", _optional(_Network)),
                   ("input", _optional(_Input)), ("hardware", _optional(_HardwareSection)),
                   ("remote_access", _list_of(_Tool)), ("sessions", _list_of(_Session)))
ParsedRecord = _section("Record", ("source_ip", "hardware_id", "clock_skew_seconds", "enrolments", "seq_conflicts"),
                        ("geo", _optional(_Geo)), ("report", _optional(_Report)))
"""An ingest record as :func:`read_records` parses it: only what :func:`reduce_record` reads."""

_NO_GEO, _NO_HOST, _NO_NETWORK, _NO_INPUT, _NO_AGENT, _NO_CONNECTION, _NO_HARDWARE = (
    _Geo(), _Host(), _Network(), _Input(), _Agent(), _Connection(), _HardwareSection())
_geo_values = attrgetter(*_GEO)
_host_values = attrgetter(*_HOST)
_network_values = attrgetter(*_NETWORK)
_input_values = attrgetter(*_INPUT)
_connection_values = attrgetter(*_TOOL_COLUMNS[6:])
_session_values = attrgetter(*_SESSION_COLUMNS[1:])
_probe_values = attrgetter(*_PROBE_COLUMNS[1:])
_usb_values = attrgetter(*_USB_KEY[1:])
_display_values = attrgetter(*_DISPLAY_KEY[1:])
_record_decoder = msgspec.json.Decoder(ParsedRecord)

READ_BUFFER = 1 << 20
"""Bytes read at a time: a 1 MiB buffer cut the reader's CPU by about 6 % on a million records
against the default 8 KiB (fewer read calls for a 2 GB export)."""


def read_records(path: Path, start: int = 0, end: int | None = None) -> Iterator[Any]:
    """Yield each record of a JSON-lines file (blank lines skipped) as a :data:`ParsedRecord`;
    a line that is not JSON, not an object, or whose sections are not what the contract makes
    them (an object where one is expected, a list of objects where a list) raises RecordError
    naming it.

    ``start``, ``end``: only the lines that begin at a byte offset from ``start`` to before ``end``
    (a shard of the file: shards cut at any offsets hold every line once); a line is then named
    by its number within the shard."""
    try:
        handle = path.open("rb", buffering=READ_BUFFER)
    except OSError as failure:
        raise unreadable(path, failure) from None
    decode = _record_decoder.decode
    with handle:
        lines: Iterable[bytes] = handle
        if start:
            handle.seek(start - 1)
            start += len(handle.readline()) - 1  # the line holding the byte before start is the previous shard's
        if end is not None:
            lines = _lines_before(handle, end - start)
        for number, line in enumerate(lines, start=1):
            try:
                yield decode(line)
            except msgspec.DecodeError as refused:
                if not line.strip():  # checked only here: stripping every ~2 KB line copies it
                    continue
                raise RecordError(f"{path} line {number}: {_why_refused(line, refused)}") from None


def unreadable(path: Path, failure: OSError) -> RecordError:
    """The error for a records file that cannot be opened."""
    return RecordError(f"{path}: cannot be read ({failure.strerror or failure})")


def _lines_before(lines: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The lines that begin within the next ``size`` bytes of ``lines``."""
    for line in lines:
        if size <= 0:
            return
        size -= len(line)
        yield line


def _why_refused(line: bytes | str, refused: msgspec.DecodeError) -> str:
    """Why a line the record decoder refused is no record: broken JSON first (the decoder may see
    a wrong type before the end of the line), then not an object, then the decoder's own reason."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as broken:
        return f"not valid JSON ({broken})"
    return "expected a JSON object" if not isinstance(value, dict) else f"not a record ({refused})"


def reduce_record(record: dict[str, Any] | msgspec.Struct, where: str | int = "record") -> Window:
    """The fields of one ingest record that detectors read; ``where`` names it in a RecordError
    (a number n: "record n"), raised also for a time outside the contract's bounds (the message
    names the field). ``record``: an ingest record as a dict, or as :func:`read_records` parses it."""
    if isinstance(record, dict):
        report = record.get("report")
        if not isinstance(report, dict) or not report.get("device_id") or not report.get("window_end"):
            raise RecordError(f"{_named(where)}: report.device_id and report.window_end are required")
        try:
            record = msgspec.convert(record, ParsedRecord)
        except msgspec.ValidationError as problem:
            raise RecordError(f"{_named(where)}: not a record ({problem})") from None
    return _reduce(record, where)


def reduce_json(data: bytes | str, where: str | int = "record") -> Window:
    """:func:`reduce_record` of one ingest record given as its JSON text (as the collector stores
    it), decoded straight into the fields the reduction reads (about 10 us a report against 16 us
    through a whole parsed dict); JSON that is no record raises RecordError saying why."""
    try:
        record = _record_decoder.decode(data)
    except msgspec.DecodeError as refused:
        raise RecordError(f"{_named(where)}: {_why_refused(data, refused)}") from None
    return _reduce(record, where)


def _named(where: str | int) -> str:
    """A record's name in a RecordError (made only then: a million numbers need no text)."""
    return where if isinstance(where, str) else f"record {where}"


def _reduce(record: Any, where: str | int) -> Window:
    report = record.report
    if report is None or not report.device_id or not report.window_end:
        raise RecordError(f"{_named(where)}: report.device_id and report.window_end are required")
    agent = report.agent or _NO_AGENT
    host = report.host or _NO_HOST
    network = report.network or _NO_NETWORK
    given = report.input
    inp = given or _NO_INPUT
    vpn = [i for i in network.interfaces or () if i.kind == "vpn"]
    # report.agent.hardware_id since issue 16 (older agents send none: absent = unknown).
    hardware_id = record.hardware_id or report.hardware_id or agent.hardware_id
    row = (
        report.device_id, report.seq, record.source_ip, hardware_id, report.window_start, report.window_end,
        *_geo_values(record.geo or _NO_GEO),
        *_host_values(host),
        ";".join(host.keyboard_layouts or ()),
        ";".join(host.input_methods or ()),
        *_network_values(network),
        next((i.vpn_product for i in vpn if i.vpn_product), None) if vpn else None,
        bool(vpn),
        *_input_values(inp),
        ";".join(inp.virtual_devices or ()),
        given is not None,
        agent.os, agent.hostname, record.clock_skew_seconds,
        host.boot_time, record.enrolments, record.seq_conflicts,
    )
    tools = []
    for tool in report.remote_access or ():
        head = (tool.tool, tool.process, tool.started_at, len(tool.listening or ()),
                ";".join(tool.matched_by or ("name",)))
        for connection in tool.connections or (_NO_CONNECTION,):
            tools.append((*head, *_connection_values(connection)))
    sessions = list(map(_session_values, report.sessions or ()))
    probes = list(map(_probe_values, network.probes or ()))
    hardware = report.hardware or _NO_HARDWARE
    # Tuples, so window_columns takes a window's hardware as a set's key as it is.
    usb = tuple(map(_usb_values, hardware.usb or ()))
    displays = tuple(map(_display_values, hardware.displays or ()))
    _check_times(where, (row,), _REPORT_TIMES)
    if tools:
        _check_times(where, tools, _TOOL_TIMES)
    if sessions:
        _check_times(where, sessions, _SESSION_TIMES)
    return Window(row, tools, sessions, probes, usb, displays)


def _check_times(where: str | int, rows: Sequence[Sequence[Any]], times: tuple[tuple[str, int], ...]) -> None:
    """Raise RecordError naming the first time in ``rows`` the contract refuses (null: not reported)."""
    for row in rows:
        for name, index in times:
            value = row[index]
            if value is not None and not (type(value) is str and value in _KNOWN_WITHIN) and not _within_bounds(value):
                raise RecordError(f"{_named(where)}: {name} {value!r} is not a time from {EARLIEST.isoformat()} "
                                  f"to before {LATEST.isoformat()} (the contract's bounds)")


_KNOWN_WITHIN: set[str] = set()
"""Time texts already found within the bounds (at most :data:`_KNOWN_WITHIN_LIMIT`), looked up
inline by :func:`_check_times` before any call: a fleet's windows begin and end at few distinct
times, so nearly every record's were checked before, and a set look-up costs less than the calls
to the cached check (three or more times per record). With the pooling in :func:`_pooled`, the
first 128 MB of the bench's 1,000,000 records took 1.38-1.46 -> 1.28-1.36 CPU s (load 7-9)."""
_KNOWN_WITHIN_LIMIT = 1 << 16


def _within_bounds(value: Any) -> bool:
    if type(value) is not str:
        return _text_within_bounds(str(value))
    within = _text_within_bounds(value)
    if within and len(_KNOWN_WITHIN) < _KNOWN_WITHIN_LIMIT:
        _KNOWN_WITHIN.add(value)
    return within


@lru_cache(maxsize=1 << 16)
def _text_within_bounds(text: str) -> bool:
    """Cached: a fleet's windows begin and end at few distinct times (agents report on a schedule),
    so nearly every record's times were checked before (0.4 us each, against 0.1 us for the look-up)."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.tzinfo is not None and EARLIEST <= moment < LATEST
    except (ValueError, OverflowError):  # not RFC 3339, or no UTC form (9999-12-31T23:30:00-05:00)
        return False


def _utc(values: Any) -> pd.Series:
    import pandas as pd
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



def frames_from_windows(windows: Iterable[Sequence[Any]]) -> Frames:
    """Build :class:`Frames` from reduced windows (:class:`Window`, or the lists JSON gives back),
    in the order given (ties of device, window end and seq keep it): their :func:`window_columns`,
    a chunk of windows at a time, through :func:`frames_from_columns`. Strings are pooled as each
    chunk is made, so a million records' copies of the same few values are never all held."""
    return frames_from_gathered([gather_windows(windows)])


def gather_windows(windows: Iterable[Sequence[Any]], pool: dict[str, str] | None = None) -> Gathered:
    """The columns :func:`frames_from_windows` builds frames from, not yet sorted into frames;
    their strings pooled in ``pool`` (by default a new one)."""
    pool = {} if pool is None else pool

    def chunks() -> Iterator[dict[str, Any]]:
        given = iter(windows)
        while chunk := list(islice(given, _CHUNK_WINDOWS)):
            yield window_columns(chunk, pool)
    return gather_columns(chunks(), pool)


_CHUNK_WINDOWS = 256
"""Windows turned into columns at a time by :func:`frames_from_windows`: few enough that a chunk's
reduced windows (a few KB of Python objects each) are still in the CPU's cache when
:func:`window_columns` walks them and when they are freed. On the bench's 1,000,000 records
(first 128 MB, one process, on a 2 MiB L2 cache per core): 4096 windows 1.37-1.41 CPU s, 1024:
1.32-1.35, 512: 1.23-1.28, 256: 1.08-1.18, 128: 1.06-1.10, 64: 1.06-1.13 (load 8-9)."""
_PARTS = (("tools", _TOOL_COLUMNS[1:]), ("sessions", _SESSION_COLUMNS[1:]), ("probes", _PROBE_COLUMNS[1:]))
WINDOW = "window"
"""The first column of a list part (tools, sessions, probes) in :func:`window_columns`: which window,
0.., the row belongs to."""
_PART_KEYS = {part: (WINDOW, *names) for part, names in _PARTS}


def window_columns(windows: Sequence[Sequence[Any]], pool: dict[str, str] | None = None) -> dict[str, Any]:
    """The column form of ``windows`` (each a :class:`Window`'s six parts, in the current
    :data:`WINDOW_LAYOUT`), plain JSON values, as the collector stores one device-hour of them::

        {"windows": n,
         "reports": {"same": {column: its one value, or null, for every column in layout order},
                     "plain": {column: [n values], for each column whose values differ}},
         "tools" | "sessions" | "probes": {"window": [index of its window, ...], column: [...], ...},
         "hardware": {"sets": [[usb items, display items], ...],
                      "window_set": [index into sets for each window]}}

    Most of a laptop's report columns keep one value for an hour, so they are stored once. Columns
    are named, so a reader maps an older layout by name (a column it lacks is None).
    :func:`frames_from_columns` builds frames from any number of these; :func:`windows_of_columns`
    gives the windows back. With ``pool``, the strings of text columns' lists are pooled in it
    (:func:`_pooled`)."""
    same: dict[str, Any] = {}
    plain: dict[str, list[Any]] = {}
    for name, values in zip(_REPORT_COLUMNS, _transposed([window[0] for window in windows], len(_REPORT_COLUMNS))):
        # One value of one type (1, 1.0 and True compare equal); the count and the type set run at C speed.
        # The last value is compared first, as count compares (identity, then ==): most columns of a
        # chunk of several devices differ there, and count would still compare every value.
        if (values and (values[-1] is values[0] or values[-1] == values[0])
                and values.count(values[0]) == len(values) and len(set(map(type, values))) == 1):
            same[name] = values[0]
        else:
            same[name] = None
            plain[name] = list(_pooled(values, pool, name))
    columns: dict[str, Any] = {"windows": len(windows), "reports": {"same": same, "plain": plain}}
    for index, (part, names) in enumerate(_PARTS, start=1):
        # Whole lists at a time (map, chain: no Python step per window): each window's entries in order.
        entries = [window[index] for window in windows]
        owners = list(chain.from_iterable(map(repeat, range(len(windows)), map(len, entries))))
        items = list(chain.from_iterable(entries))
        columns[part] = {WINDOW: owners, **{name: list(_pooled(values, pool, name)) for name, values in
                                            zip(names, _transposed(items, len(names)))}}
    keys = list(zip([window[4] for window in windows], [window[5] for window in windows]))
    # Each key hashed once (a nested tuple's hash is not kept): each set's first window, by key.
    firsts: dict[Any, int] = {}
    try:  # reduce_record's hardware is tuples of tuples: its own key
        window_first = list(map(firsts.setdefault, keys, range(len(keys))))
    except TypeError:  # lists, as JSON gives windows back
        keys = [(_items_key(usb), _items_key(displays)) for usb, displays in keys]
        window_first = list(map(firsts.setdefault, keys, range(len(keys))))
    numbers = {first: number for number, first in enumerate(firsts.values())}  # sets numbered as first seen
    columns["hardware"] = {"sets": [[list(map(list, usb)), list(map(list, displays))] for usb, displays in firsts],
                           "window_set": list(map(numbers.__getitem__, window_first))}
    return columns


def _transposed(rows: Sequence[Sequence[Any]], width: int) -> list[tuple[Any, ...]]:
    return list(zip(*rows)) if rows else [() for _ in range(width)]


def _items_key(items: Sequence[Sequence[Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(map(tuple, items))


def _report_values(stored: dict[str, Any], count: int) -> list[list[Any]]:
    """Each report column's ``count`` values from a stored ``reports`` (missing: None)."""
    same, plain = stored["same"], stored["plain"]
    return [plain[name] if name in plain else [same.get(name)] * count for name in _REPORT_COLUMNS]


def _part_values(stored: dict[str, Any], keys: tuple[str, ...]) -> tuple[list[Any], ...]:
    """A stored list part's columns in ``keys`` order (one it lacks: None for every row)."""
    if tuple(stored) == keys:  # as written by this layout: no lookups
        return tuple(stored.values())
    rows = len(stored[WINDOW])
    return tuple(stored[key] if key in stored else [None] * rows for key in keys)


def windows_of_columns(columns: dict[str, Any]) -> list[list[Any]]:
    """The windows :func:`window_columns` made ``columns`` from (each ``[row, tools, sessions,
    probes, usb, displays]``, rows as tuples), in their order; a column the stored form lacks is None."""
    count = columns["windows"]
    windows: list[list[Any]] = [[row] for row in zip(*_report_values(columns["reports"], count))] if count else []
    for part, _ in _PARTS:
        entries: list[list[tuple[Any, ...]]] = [[] for _ in range(count)]
        owners, *values = _part_values(columns[part], _PART_KEYS[part])
        for owner, *item in zip(owners, *values):
            entries[owner].append(tuple(item))
        for window, items in zip(windows, entries):
            window.append(items)
    hardware = columns["hardware"]
    sets = hardware["sets"]
    for window, index in zip(windows, hardware["window_set"]):
        usb, displays = sets[index]
        window += [[tuple(item) for item in usb], [tuple(item) for item in displays]]
    return windows


def frames_from_columns(blocks: Iterable[dict[str, Any]], pool: dict[str, str] | None = None) -> Frames:
    """Build :class:`Frames` from column forms of windows (:func:`window_columns`, or the packed
    form :func:`packed_columns` makes of one, or both mixed), the windows in the order given (ties
    of device, window end and seq keep it), as :func:`frames_from_windows` builds them from the
    windows themselves.

    Python touches each block a few times, never each window: a block's single values are taken
    as one tuple, its differing columns and list parts as whole pieces (lists, packed numbers or
    dictionary-coded text); each column of the batch is then assembled (numpy repeats the single
    values, joins the pieces and places them) and converted once. Strings of text columns are
    pooled (one object per distinct value: about half the frames' memory at fleet scale), a
    block's lists as it is taken, so the batch never holds every decoded copy; ``pool``: the one
    the blocks' lists were already pooled in (:func:`window_columns`), so only their single values
    and dictionaries are pooled here."""
    return frames_from_gathered([gather_columns(blocks, pool)])


@dataclass
class Gathered:
    """The columns of a batch of windows, joined in the order given but not yet sorted into
    :class:`Frames` (:func:`frames_from_gathered`). Numpy arrays, cheap to pickle: the form in which
    farmwatch-detect's worker processes hand back the windows of their part of a file."""

    windows: int
    reports: dict[str, Any]  # each report column, one value per window
    parts: dict[str, dict[str, Any]]  # tools, sessions, probes: "rec" (each row's window, 0..) and their columns
    hardware: _Hardware


def gather_columns(blocks: Iterable[dict[str, Any]], pool: dict[str, str] | None = None) -> Gathered:
    """The columns :func:`frames_from_columns` builds frames from, not yet sorted into frames."""
    lists_pool: dict[str, str] | None = None  # pooled already as the blocks were made: not again
    if pool is None:
        pool = lists_pool = {}
    counts: list[int] = []
    singles: list[tuple[Any, ...]] = []  # per block: each report column's one value (None where it differs)
    differing: dict[str, tuple[list[int], list[Any]]] = {name: ([], []) for name in _REPORT_COLUMNS}
    parts = {part: _Part(keys) for part, keys in _PART_KEYS.items()}
    hardware = _Hardware()
    offset = 0
    for block in blocks:
        count = block["windows"]
        if not count:
            continue
        stored = block["reports"]
        same = stored["same"]
        singles.append(tuple(same.values()) if tuple(same) == _REPORT_COLUMNS else tuple(map(same.get, _REPORT_COLUMNS)))
        for name, values in stored["plain"].items():
            found = differing.get(name)  # a column this layout no longer has is left out
            if found is not None:
                found[0].append(len(counts))
                found[1].append(_pooled(values, lists_pool, name) if type(values) is list else values)
        for part, taken in parts.items():
            taken.add(block[part], offset, count, lists_pool)
        hardware.add(block["hardware"])
        counts.append(count)
        offset += count
    repeats = np.asarray(counts, dtype=np.int64)
    by_column = _transposed(singles, len(_REPORT_COLUMNS))
    del singles
    reports: dict[str, Any] = {}
    for index, name in enumerate(_REPORT_COLUMNS):
        blocks_of, pieces = differing.pop(name)
        if len(pieces) == len(counts):  # its own value in every window (times, input counts)
            reports[name] = _joined(name, pieces, repeats, pool)
        else:
            column = np.repeat(_converted(name, by_column[index], pool), repeats)
            if pieces:
                placed = np.zeros(len(counts), dtype=bool)
                placed[blocks_of] = True
                column[np.repeat(placed, repeats)] = _joined(name, pieces, repeats[blocks_of], pool)
            reports[name] = column
        by_column[index] = ()
    return Gathered(offset, reports, {part: taken.columns(pool) for part, taken in parts.items()}, hardware)


def frames_from_gathered(batches: Sequence[Gathered]) -> Frames:
    """Build :class:`Frames` from batches of windows' columns, their windows in the order given,
    as from one batch of them all (the frames of a file whose parts were reduced apart). The
    batches' arrays are emptied as they are used.

    Only the sort keys (device, window end, seq) are joined in the order given; every other column
    is written once, straight into its sorted rows, from each batch's piece. Joining every column
    and then reordering it copied each twice: on a million records that and a sort that reordered
    every column only to keep the order were about half of the frames' 2.1 CPU s, all of it in one
    process while farmwatch-detect's other processes wait."""
    import pandas as pd
    batches = [batch for batch in batches if batch.windows] or list(batches[:1])
    firsts = np.cumsum([0] + [batch.windows for batch in batches])  # each batch's first window; last: the count
    hardware = batches[0].hardware
    if len(batches) > 1:
        hardware = _Hardware()
        for batch in batches:
            hardware.add_batch(batch.hardware)
    devices = _whole([batch.reports.pop("device_id") for batch in batches])  # in the order given: the hardware's windows
    window_end_texts = _whole([batch.reports.pop("window_end") for batch in batches])
    window_ends = _column("window_end", window_end_texts)
    unreadable = np.asarray(window_ends.isna())
    if unreadable.any():
        first = int(unreadable.argmax())
        raise RecordError(f"record {first + 1}: report.window_end is not an RFC 3339 time: {window_end_texts[first]!r}")
    del window_end_texts
    sequences = _whole([batch.reports.pop("seq") for batch in batches])
    # Sort once so every detector sees each device's records in time order; remap child tables.
    keys = pd.DataFrame({"device_id": devices, "window_end": window_ends, "seq": sequences}, copy=False)
    order = keys.sort_values(["device_id", "window_end", "seq"], kind="stable").index.to_numpy()
    del keys
    new_rec = np.empty(len(order), dtype=np.int64)
    new_rec[order] = np.arange(len(order))
    rows = [new_rec[start:end] for start, end in zip(firsts[:-1], firsts[1:])]  # each batch's windows' rows once sorted
    sorted_keys = {"device_id": devices[order], "window_end": window_ends.take(order), "seq": sequences[order]}
    del window_ends, sequences
    reports = {}
    for name in _REPORT_COLUMNS:
        column = sorted_keys.pop(name) if name in sorted_keys else _placed([_array(name, batch.reports.pop(name))
                                                                            for batch in batches], rows)
        reports[name] = _column(name, column) if name == "window_start" else column
    reports_table = pd.DataFrame(reports, copy=False)
    del reports
    # Whole hours since the epoch: a cheap integer key for "at the same time" joins.
    reports_table["hour"] = ((reports_table["window_end"] - pd.Timestamp(0, tz="UTC"))
                             // pd.Timedelta(hours=1)).astype("int64")
    # The device as an integer, 0.. in device id order (the rows are sorted by device): detectors
    # group, join and compare on it instead of hashing the id string of every row.
    reports_table["device_code"] = pd.factorize(reports_table["device_id"].to_numpy())[0]
    usb, displays = hardware.folded(devices, new_rec)
    del devices
    sorted_devices = reports_table["device_id"].to_numpy()

    def child(part: str, names: tuple[str, ...]) -> pd.DataFrame:
        given = [(batch.parts.pop(part), first) for batch, first in zip(batches, firsts)]
        return _child_table([(columns, first) for columns, first in given if len(columns["rec"])] or given[:1],
                            names, order, new_rec, sorted_devices)

    # Largest table first: each batch's columns are freed once placed, which lowers the peak for the next.
    probes = child("probes", _PROBE_COLUMNS)
    tools = child("tools", _TOOL_COLUMNS)
    # A live session is a TCP connection with a known peer established in the window (still at its
    # end, or ended inside it).
    tools["live"] = tools["state"].astype(str).str.upper().isin(("ESTABLISHED", _ENDED)) & tools["remote_ip"].notna()
    return Frames(reports=reports_table, tools=tools, sessions=child("sessions", _SESSION_COLUMNS), probes=probes,
                  usb=usb, displays=displays)


def _whole(pieces: Sequence[Any]) -> Any:
    """One array of the pieces, in order."""
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def _array(name: str, values: Any) -> Any:
    """Column ``name``'s values as the array its table holds (a list part without rows may hold
    lists; window times stay text, parsed once the column is whole)."""
    return values if isinstance(values, np.ndarray) else _column(name, values)


def _placed(pieces: Sequence[Any], rows: Sequence[Any]) -> Any:
    """One column of the pieces' values, each piece's written to its ``rows`` (as many as it has values)."""
    column = np.empty(sum(map(len, rows)), dtype=np.result_type(*pieces))
    for piece, at in zip(pieces, rows):
        column[at] = piece
    return column


def _child_table(given: Sequence[tuple[dict[str, Any], int]], names: tuple[str, ...], order: Any, new_rec: Any,
                 sorted_devices: Any) -> pd.DataFrame:
    """A list part's table (``names``: ``rec`` and its columns) from batches' columns, each with its
    first window among all of them, its rows placed as the windows they belong to are sorted
    (``order``: the windows in their sorted order, ``new_rec``: each one's place in it; a window's
    rows in the order given), with each row's device. The batches' columns are emptied as they are used."""
    import pandas as pd
    lengths = [len(columns["rec"]) for columns, _ in given]
    recs = _whole([columns.pop("rec") + first for columns, first in given])  # each row's window, as given
    counts = np.bincount(recs, minlength=len(new_rec))  # rows per window, as given
    sorted_counts = counts[order]
    # A row's place: its window's first row once sorted, plus its place among its window's rows;
    # with the rows of each window together in window order (as gathered; a stored block may list
    # them otherwise: then grouped so first, each window's in the order given).
    grouped = np.argsort(recs, kind="stable") if (np.diff(recs) < 0).any() else None
    in_groups = recs if grouped is None else recs[grouped]
    places = (np.cumsum(sorted_counts) - sorted_counts)[new_rec[in_groups]]  # (in place: 3M rows of probes)
    places += np.arange(len(recs), dtype=np.int64)
    places -= (np.cumsum(counts) - counts)[in_groups]
    if grouped is not None:
        places[grouped] = places.copy()
    del recs, in_groups, grouped
    sorted_rec = np.repeat(np.arange(len(order), dtype=np.int64), sorted_counts)
    rows = np.split(places, np.cumsum(lengths)[:-1])
    table = {"rec": sorted_rec}
    for name in names[1:]:
        table[name] = _placed([_array(name, columns.pop(name)) for columns, _ in given], rows)
    table["device_id"] = sorted_devices[sorted_rec]
    return pd.DataFrame(table, copy=False)


# Text columns: their strings are pooled (numbers are not: 1, 1.0 and True are equal dict keys,
# and the window times are parsed, not kept).
_POOLED = frozenset(name for name in (*_REPORT_COLUMNS, *(name for _, names in _PARTS for name in names))
                    if name not in _NUMERIC | _INTEGER | _BOOLEAN and name not in _PARSED_TIMES)
# How packed_columns stores a number column's piece: a tag, then base64 of little-endian values.
# Tags are outside the base64 alphabet, so a2b_base64 skips them: pieces of one tag are joined and
# decoded as they are.
_INTEGERS = "#"  # int64 as they are (listening)
_FLOATS = "."  # float64 as they are
_CONSTANT = "*"  # one float64, the value of every row
_SCALED = {"!": 1.0, "%": 100.0, "^": 10_000.0}  # int32 n: the float n / scale (agents send few decimals)
_NULL = int(np.iinfo(np.int32).min)  # a null among scaled values
_FLOAT, _INT32, _INT64 = np.dtype("<f8"), np.dtype("<i4"), np.dtype("<i8")
_COUNTS = "window_counts"
"""In a packed list part, in place of :data:`WINDOW`: how many of its rows each window has."""
_COUNT_TYPE = np.dtype("<i4")


_TEXT_OR_NULL = frozenset((str, type(None)))


def _pooled(values: Sequence[Any], pool: dict[str, str] | None, name: str) -> Sequence[Any]:
    """``values`` of column ``name`` with each string replaced by the first equal one ``pool`` holds
    (only for text columns, and only with a pool)."""
    if pool is None or name not in _POOLED:
        return values
    keep = pool.setdefault
    if set(map(type, values)) <= _TEXT_OR_NULL:  # nearly always: every value at C speed (None is kept as None)
        return list(map(keep, values, values))
    return [keep(value, value) if type(value) is str else value for value in values]


def _converted(name: str, values: Sequence[Any], pool: dict[str, str] | None) -> Any:
    """Column ``name``'s ``values`` as the array its table holds (:func:`_column`), strings pooled;
    window times stay text (an object array), parsed once the column is whole."""
    if name not in _PARSED_TIMES:
        return _column(name, _pooled(values, pool, name))
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def packed_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """``columns`` (:func:`window_columns`'s form, plain JSON) with fewer, cheaper values to decode,
    as the collector stores a device-hour (issue 12: decoding each number and string as a Python
    object was most of rebuilding frames). Still JSON; :func:`frames_from_columns` reads it as it
    reads the plain form, and :func:`unpacked_columns` gives the plain form back.

    * a number column's list (report columns that differ within the hour, list parts' numbers), when
      every value is an int, a float or null: the float64 array its frame column holds (``listening``:
      int64; a non-finite float reads as null, as JSON stores it), as a tag and base64 of
      little-endian values: ``*`` one value for every row, ``!``/``%``/``^`` int32 of the values
      times 1, 100 or 10,000 (null: int32's minimum) when that gives back every bit, else ``.``
      float64 (``#`` int64 for ``listening``); any other list is kept as it is, so it converts as
      it did;
    * a text column's list of strings and nulls: ``{"values": [each distinct one], "codes":
      base64 of each row's index into them}`` (uint8, uint16 or int32 as their number needs):
      probe targets, tools and their states repeat all hour;
    * a list part without rows is ``{}``; one with rows has ``window_counts`` (base64 int32, rows
      per window, in window order) in place of ``window``;
    * other columns (times, flags, the single values, hardware) stay as they were."""
    reports = columns["reports"]
    packed = {**columns, "reports": {"same": reports["same"], "plain": {
        name: _packed(name, values) for name, values in reports["plain"].items()}}}
    for part, _ in _PARTS:
        stored = columns[part]
        owners = stored[WINDOW]
        if not owners:
            packed[part] = {}
            continue
        rows = np.asarray(owners, dtype=np.int64)
        head: dict[str, Any] = ({WINDOW: owners} if (np.diff(rows) < 0).any() else  # not in window order: kept
                                {_COUNTS: _base64(np.bincount(rows, minlength=columns["windows"]).astype(_COUNT_TYPE))})
        packed[part] = {**head, **{name: _packed(name, values) for name, values in stored.items() if name != WINDOW}}
    return packed


def _base64(array: Any) -> str:
    """``array``'s bytes as base64, padded with zeros to a multiple of three values so that no ``=``
    ends it: the pieces of a column are then joined as text and decoded at once (:func:`_arrays`;
    an hour of twelve windows needs no padding)."""
    padded = np.concatenate([array, np.zeros(-len(array) % 3, dtype=array.dtype)]) if len(array) % 3 else array
    return binascii.b2a_base64(padded.tobytes(), newline=False).decode("ascii")


def _arrays(pieces: Sequence[str], kind: np.dtype[Any], lengths: Any) -> Any:
    """The values of base64 pieces (:func:`_base64`) of arrays of ``kind``, ``lengths`` values each,
    joined in native byte order: one decode for all of them, each piece's padding dropped by index."""
    values = np.frombuffer(binascii.a2b_base64("".join(pieces)), dtype=kind)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(values) != lengths.sum():  # some piece was padded
        # each piece's values with padding (a number's one-character tag is left out by the // 4)
        padded = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces)) // 4 * 3 // kind.itemsize
        ends = np.cumsum(lengths)
        values = values[np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(np.cumsum(padded) - padded - ends + lengths, lengths)]
    return values.astype(kind.newbyteorder("="))


def _code_type(distinct: int) -> np.dtype[Any]:
    return np.dtype("<u1") if distinct <= 1 << 8 else np.dtype("<u2") if distinct <= 1 << 16 else np.dtype("<i4")


def _packed(name: str, values: list[Any]) -> Any:
    """One column's list as :func:`packed_columns` stores it."""
    if name in _NUMERIC or name in _INTEGER:
        try:
            if name in _NUMERIC:
                return _packed_floats(values)
            if all(type(value) is int for value in values):
                return _INTEGERS + _base64(np.array(values, dtype=_INT64))  # the conversion _column makes
        except OverflowError:  # an int beyond 64 (float: 1024) bits, which JSON cannot store either
            pass
        return values
    if name in _POOLED and all(type(value) is str or value is None for value in values):
        distinct: dict[str | None, int] = {}
        codes = [distinct.setdefault(value, len(distinct)) for value in values]
        return {"values": list(distinct), "codes": _base64(np.array(codes, dtype=_code_type(len(distinct))))}
    return values


def _packed_floats(values: list[Any]) -> Any:
    """The smallest tagged form that gives back every bit of the float64 of ``values``: one value,
    int32 of a decimal scale, or the float64 themselves; ``values`` as they are when one is not an
    int, a float or null. A non-finite float reads as null, as JSON stores it. In Python, value by
    value: an hour's column is a dozen values, for which numpy's per-call cost is most of the work
    (the reducer packs every row it merges into)."""
    floats: list[float | None] = []
    for given in values:
        kind = type(given)
        if kind is float or kind is int:
            value = float(given)  # as np.array(values, dtype=float64) converts it
            floats.append(value if math.isfinite(value) else None)
        elif given is None:
            floats.append(None)
        else:  # kept: it converts (or fails) as it did
            return values
    signed = {None if value is None else (value, math.copysign(1.0, value)) for value in floats}
    if len(signed) == 1:
        return _CONSTANT + _base64(np.array(floats[:1], dtype=_FLOAT))
    for tag, scale in _SCALED.items():
        ints = _scaled(floats, scale)
        if ints is not None:
            return tag + _base64(np.array(ints, dtype=_INT32))
    return _FLOATS + _base64(np.array(floats, dtype=_FLOAT))


def _scaled(floats: list[float | None], scale: float) -> list[int] | None:
    """Each value times ``scale`` as an int32 (null: _NULL) when :func:`_scaled_floats` gives back
    exactly it (n / scale is correctly rounded both here and there; -0.0 would come back 0.0)."""
    ints = []
    for value in floats:
        if value is None:
            ints.append(_NULL)
            continue
        scaled = round(value * scale)
        if abs(scaled) >= -_NULL - 1 or scaled / scale != value or (value == 0 and math.copysign(1.0, value) < 0):
            return None
        ints.append(scaled)
    return ints


def _scaled_floats(ints: Any, scale: float) -> Any:
    values = ints.astype(np.float64) / scale  # correctly rounded: the float nearest n / scale, as parsing its decimal text gives
    values[ints == _NULL] = np.nan
    return values


def _numbers(name: str, pieces: Sequence[str], lengths: Any) -> Any:
    """Packed number pieces of column ``name`` (``lengths`` values each) joined into the array its
    frame holds: the pieces of each tag decoded at once (nearly always a column has one)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    tags = {piece[0] for piece in pieces}
    if len(tags) == 1:
        return _tagged(tags.pop(), pieces, lengths)
    joined = np.empty(int(lengths.sum()), dtype=np.int64 if name in _INTEGER else np.float64)
    starts = np.cumsum(lengths) - lengths
    for tag in tags:
        chosen = np.asarray([index for index, piece in enumerate(pieces) if piece[0] == tag], dtype=np.int64)
        taken = lengths[chosen]
        ends = np.cumsum(taken)
        joined[np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(starts[chosen] - ends + taken, taken)] = _tagged(
            tag, [pieces[index] for index in chosen], taken)
    return joined


def _tagged(tag: str, texts: Sequence[str], lengths: Any) -> Any:
    if tag == _INTEGERS:
        return _arrays(texts, _INT64, lengths)
    if tag == _FLOATS:
        return _arrays(texts, _FLOAT, lengths)
    if tag == _CONSTANT:
        return np.repeat(_arrays(texts, _FLOAT, np.ones(len(texts), dtype=np.int64)), lengths)
    return _scaled_floats(_arrays(texts, _INT32, lengths), _SCALED[tag])


def _decoded_text(pieces: Sequence[dict[str, Any]], lengths: Any, pool: dict[str, str] | None) -> Any:
    """Dictionary-coded text pieces of ``lengths`` rows each joined into one object array, their
    strings pooled."""
    values: list[Any] = []
    starts: list[int] = []
    for piece in pieces:
        starts.append(len(values))
        values.extend(piece["values"])
    if pool is not None:
        keep = pool.setdefault
        values = [keep(value, value) if type(value) is str else value for value in values]
    kind = _code_type(max(len(piece["values"]) for piece in pieces))
    if kind == _code_type(1):  # every piece's codes one byte wide (nearly always): decoded at once
        codes = _arrays([piece["codes"] for piece in pieces], kind, lengths)
    else:
        codes = np.concatenate([_arrays([piece["codes"]], _code_type(len(piece["values"])), [length])
                                for piece, length in zip(pieces, lengths)])
    codes = codes.astype(np.int64) + np.repeat(np.asarray(starts, dtype=np.int64), lengths)
    table = np.empty(len(values), dtype=object)
    table[:] = values
    return table[codes]


def _joined(name: str, pieces: Sequence[Any], lengths: Any, pool: dict[str, str] | None) -> Any:
    """Column ``name`` of the pieces' blocks (``lengths`` rows each), in order, as the array its
    table holds: pieces are lists (pooled already), packed numbers or dictionary-coded text
    (:func:`packed_columns`)."""
    kinds = set(map(type, pieces))
    if kinds <= {list}:  # (no pieces: an empty batch)
        return _converted(name, list(chain.from_iterable(pieces)), None)
    if kinds == {str}:
        return _numbers(name, pieces, lengths)
    if kinds == {dict}:
        return _decoded_text(pieces, lengths, pool)
    # Packed and plain blocks mixed (the plain ones kept as they were): each converted, then joined.
    return np.concatenate([_joined(name, [piece], [length], pool) for piece, length in zip(pieces, lengths)])


class _Part:
    """A list part's (tools, sessions, probes) pieces as blocks give them (:func:`frames_from_columns`)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.pieces: dict[str, list[Any]] = {name: [] for name in keys[1:]}
        self.owners: list[Any] = []  # per block with rows: its WINDOW list, or its packed _COUNTS
        self.offsets: list[int] = []  # the batch's index of that block's first window
        self.windows: list[int] = []  # and its number of windows

    def add(self, stored: dict[str, Any], offset: int, count: int, pool: dict[str, str] | None) -> None:
        owners = stored.get(WINDOW) or stored.get(_COUNTS)
        if not owners:
            return
        self.owners.append(owners)
        self.offsets.append(offset)
        self.windows.append(count)
        for name, pieces in self.pieces.items():
            piece = stored.get(name)
            if piece is None:  # a column this block's layout lacks: not reported
                piece = [None] * len(_recs(owners, 0, count))
            pieces.append(_pooled(piece, pool, name) if type(piece) is list else piece)

    def columns(self, pool: dict[str, str] | None) -> dict[str, Any]:
        """``rec`` (each row's window in the batch) and every column, joined."""
        windows = np.asarray(self.windows, dtype=np.int64)
        if not self.owners:
            recs, rows = np.zeros(0, dtype=np.int64), windows
        elif all(type(owners) is str for owners in self.owners):  # packed: rows per window, all at once
            per_window = _arrays(self.owners, _COUNT_TYPE, windows)
            starts = np.cumsum(windows) - windows
            first = np.arange(len(per_window), dtype=np.int64) + np.repeat(np.asarray(self.offsets, dtype=np.int64) - starts, windows)
            recs = np.repeat(first, per_window)
            rows = np.add.reduceat(per_window.astype(np.int64), starts)
        else:
            each = [_recs(owners, offset, count) for owners, offset, count in zip(self.owners, self.offsets, self.windows)]
            recs, rows = np.concatenate(each), np.asarray([len(recs) for recs in each], dtype=np.int64)
        columns = {"rec": recs}
        for name, pieces in self.pieces.items():
            columns[name] = _joined(name, pieces, rows, pool) if pieces else []
        self.pieces.clear()
        return columns


def _recs(owners: Any, offset: int, count: int) -> Any:
    """The batch's window of each row of one block's part (of ``count`` windows, the first at
    ``offset``), from its WINDOW list or packed counts."""
    if type(owners) is str:
        return np.repeat(np.arange(offset, offset + count, dtype=np.int64), _arrays([owners], _COUNT_TYPE, [count]))
    return np.asarray(owners, dtype=np.int64) + offset


def unpacked_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """The plain form (:func:`window_columns`) of a packed one (:func:`packed_columns`), for
    :func:`windows_of_columns`; a plain one is given back as it is. Numbers come back as the floats
    their frames hold (3.0 for 3)."""
    count = columns["windows"]
    reports = columns["reports"]
    plain = {name: _plain(values, count) for name, values in reports["plain"].items()}
    unpacked = {**columns, "reports": {"same": reports["same"], "plain": plain}}
    for part, _ in _PARTS:
        stored = columns[part]
        owners = stored.get(WINDOW) or stored.get(_COUNTS)
        names = [name for name in stored if name not in (WINDOW, _COUNTS)]
        if not owners:
            unpacked[part] = {WINDOW: [], **{name: [] for name in names}}
            continue
        rows = (list(owners) if type(owners) is list else
                [window for window, rows in enumerate(_values(owners, _COUNT_TYPE, count)) for _ in range(rows)])
        unpacked[part] = {WINDOW: rows, **{name: _plain(stored[name], len(rows)) for name in names}}
    return unpacked


# One row's pieces are decoded here in plain Python (binascii + struct), not numpy: a dozen values,
# for which numpy's per-call cost was most of the work, and the reducer unpacks every row it merges
# into. The values are those :func:`_numbers` and :func:`_arrays` give, bit for bit (int32 n / scale
# is the same correctly rounded division; a scaled null is NaN there too).
def _plain(values: Any, length: int) -> list[Any]:
    """One column of ``length`` rows as a list, whichever way it is stored."""
    if type(values) is str:
        return _plain_numbers(values, length)
    if type(values) is dict:
        distinct = values["values"]
        return [distinct[code] for code in _values(values["codes"], _code_type(len(distinct)), length)]
    return list(values)


def _plain_numbers(piece: str, length: int) -> list[Any]:
    """One packed number piece (:func:`_packed`) of ``length`` values as the Python numbers
    :func:`_numbers` gives (float64 as floats, int64 as ints)."""
    tag = piece[0]
    if tag == _CONSTANT:
        return _values(piece, _FLOAT, 1) * length
    if tag in _SCALED:
        scale = _SCALED[tag]
        return [math.nan if value == _NULL else value / scale for value in _values(piece, _INT32, length)]
    return _values(piece, _WIDE[tag], length)


def _values(piece: str, kind: np.dtype[Any], length: int) -> list[Any]:
    """The first ``length`` little-endian values of ``kind`` in one base64 piece (a tag, if any, is
    skipped by a2b_base64; the rest is padding: :func:`_base64`)."""
    return list(struct.unpack_from(f"<{length}{_STRUCT_CODES[kind]}", binascii.a2b_base64(piece)))


_WIDE = {_INTEGERS: _INT64, _FLOATS: _FLOAT}
_STRUCT_CODES = {_FLOAT: "d", _INT32: "i", _INT64: "q", _code_type(1): "B", _code_type(1 << 16): "H"}


class _Hardware:
    """The batch's hardware: each distinct set of (usb, displays) items once, and each window's set;
    folded per device and identity once the windows' final order is known (:meth:`folded`)."""

    def __init__(self) -> None:
        self.sets: list[tuple[tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]] = []
        self.index: dict[Any, int] = {}
        self.window_set: list[int] = []

    def add(self, stored: dict[str, Any]) -> None:
        mapping = []
        for usb, displays in stored["sets"]:
            key = (_items_key(usb), _items_key(displays))
            found = self.index.get(key)
            if found is None:
                found = self.index[key] = len(self.sets)
                self.sets.append(key)
            mapping.append(found)
        self.window_set.extend([mapping[index] for index in stored["window_set"]])

    def add_batch(self, other: _Hardware) -> None:
        """The hardware of another batch's windows, after this one's."""
        self.add({"sets": other.sets, "window_set": other.window_set})

    def folded(self, devices: Any, new_rec: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One row per device and identity, usb and displays, in the order each first appears among
        the windows as given, with the first and last ``rec`` (``new_rec``: each window's row after
        the sort) holding it and how many times windows held it. ``devices``: each window's device,
        as given."""
        import pandas as pd
        usb: dict[tuple[Any, ...], list[int]] = {}
        displays: dict[tuple[Any, ...], list[int]] = {}
        window_set = np.asarray(self.window_set, dtype=np.int64)
        self.window_set = []
        holding = np.flatnonzero(np.array([bool(u or d) for u, d in self.sets], dtype=bool)[window_set]
                                 if len(self.sets) else np.zeros(0, dtype=bool))
        if len(holding):
            # Windows of one device with the same set hold the same identities: fold those pairs
            # with numpy, then each pair's few identities in Python.
            codes, device_ids = pd.factorize(np.asarray(devices, dtype=object)[holding])
            pair = codes.astype(np.int64) * len(self.sets) + window_set[holding]
            keys, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
            recs = new_rec[holding]
            lowest = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
            highest = np.full(len(keys), -1, dtype=np.int64)
            np.minimum.at(lowest, inverse, recs)
            np.maximum.at(highest, inverse, recs)
            windows = np.bincount(inverse, minlength=len(keys))
            for at in np.argsort(first, kind="stable"):  # first appearance among the windows as given
                device = device_ids[keys[at] // len(self.sets)]
                held_usb, held_displays = self.sets[keys[at] % len(self.sets)]
                for seen, items in ((usb, held_usb), (displays, held_displays)):
                    for item in items:
                        _count(seen, (device, *item), int(lowest[at]), int(highest[at]), int(windows[at]))
        return _folded(usb, _USB_KEY), _folded(displays, _DISPLAY_KEY)


def _count(seen: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], first: int, last: int, windows: int) -> None:
    """Add ``windows`` windows, from rec ``first`` to ``last``, to identity ``key``'s [first, last, count]."""
    entry = seen.get(key)
    if entry is None:
        seen[key] = [first, last, windows]
    else:
        entry[0], entry[1], entry[2] = min(entry[0], first), max(entry[1], last), entry[2] + windows


def _folded(seen: dict[tuple[Any, ...], list[int]], key: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd
    rows = [identity + tuple(counts) for identity, counts in seen.items()]
    return pd.DataFrame(rows, columns=list(key) + ["first_rec", "last_rec", "reports"])
