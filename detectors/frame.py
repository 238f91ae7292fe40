"""Flatten ingest records (wire JSON dicts) into the pandas frames every detector reads.

Speed matters here (a million records must score in well under a minute on two cores), so each
record is walked once in plain Python, appending to column lists; pandas only sees whole columns.
List sections become their own long tables keyed by ``rec`` (the record's row in ``reports``).
USB devices and displays barely change between reports, so they are folded per device into
first/last/count rows while flattening instead of being repeated a million times.

Missing sections and unknown values become None/NaN: a detector treats "not reported" as absent,
never as evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

# Columns of the one-row-per-record table, by source: (column, section, field).
_HOST = ("timezone", "utc_offset_minutes", "locale")
_INPUT = (
    "seconds_observed",
    "active_seconds",
    "key_events",
    "mouse_events",
    "injected_events",
    "key_interval_ms_p10",
    "key_interval_ms_p50",
    "key_interval_ms_p90",
    "key_burst_fraction",
    "mouse_rate_hz_median",
    "mouse_jump_fraction",
)
_NETWORK = ("gateway_ip", "gateway_mac_hash", "wifi_bssid_hash", "lan_neighbors")
_GEO = ("country", "asn", "asn_org", "network_kind")
_TIMES = ("received_at", "window_start", "window_end", "boot_time")
_REPORT_COLUMNS = (
    ("device_id", "seq", "hostname", "os", "source_ip", "hardware_id", "n_errors")
    + _TIMES
    + _GEO
    + _HOST
    + ("keyboard_layouts", "input_methods", "remote_users")
    + _NETWORK
    + ("vpn_product", "has_vpn_interface")
    + _INPUT
    + ("virtual_devices", "has_input")
)
_TOOL_COLUMNS = (
    "rec", "tool", "process", "started_at", "listening",
    "remote_ip", "remote_port", "local_port", "state", "direction", "rtt_ms", "min_rtt_ms",
)
_SESSION_COLUMNS = ("rec", "kind", "user", "remote_ip", "rtt_ms", "min_rtt_ms")
_PROBE_COLUMNS = ("rec", "target", "sent", "received", "rtt_min_ms", "rtt_median_ms")
_USB_KEY = ("device_id", "vendor_id", "product_id", "manufacturer", "product", "serial")
_DISPLAY_KEY = ("device_id", "name", "manufacturer", "serial_hash")

_EMPTY: dict[str, Any] = {}


@dataclass
class Frames:
    """The flattened records.

    ``reports``: one row per record, sorted by device and window end (index 0..n-1 = ``rec``).
    ``tools``: one row per remote-access connection (a tool without connections: one row, no peer);
    ``live`` marks established connections.
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
        return pd.Series(self.reports["window_end"].to_numpy()[recs], index=table.index)


class RecordError(ValueError):
    """An ingest record that lacks what every detector relies on; the message names the record."""


def flatten(records: Iterable[dict[str, Any]]) -> Frames:
    """Walk every record once and build :class:`Frames`. Raises :class:`RecordError` on a record
    without ``report.device_id`` or ``report.window_end``."""
    cols: dict[str, list[Any]] = {name: [] for name in _REPORT_COLUMNS}
    tools: dict[str, list[Any]] = {name: [] for name in _TOOL_COLUMNS}
    sessions: dict[str, list[Any]] = {name: [] for name in _SESSION_COLUMNS}
    probes: dict[str, list[Any]] = {name: [] for name in _PROBE_COLUMNS}
    usb: dict[tuple[Any, ...], list[int]] = {}
    displays: dict[tuple[Any, ...], list[int]] = {}
    add = {name: column.append for name, column in cols.items()}
    rec = -1
    for rec, record in enumerate(records):
        report = record.get("report")
        if not isinstance(report, dict) or not report.get("device_id") or not report.get("window_end"):
            raise RecordError(f"record {rec + 1}: report.device_id and report.window_end are required")
        device = report["device_id"]
        agent = report.get("agent") or _EMPTY
        geo = record.get("geo") or _EMPTY
        host = report.get("host") or _EMPTY
        network = report.get("network") or _EMPTY
        given = report.get("input")
        inp = given or _EMPTY
        add["device_id"](device)
        add["seq"](report.get("seq"))
        add["hostname"](agent.get("hostname"))
        add["os"](agent.get("os"))
        add["source_ip"](record.get("source_ip"))
        # Not in report v1 yet: a collector or agent may add the enrolled hardware id; absent = unknown.
        add["hardware_id"](record.get("hardware_id") or report.get("hardware_id") or agent.get("hardware_id"))
        add["n_errors"](len(report.get("errors") or ()))
        add["received_at"](record.get("received_at"))
        add["window_start"](report.get("window_start"))
        add["window_end"](report["window_end"])
        add["boot_time"](host.get("boot_time"))
        for name in _GEO:
            add[name](geo.get(name))
        for name in _HOST:
            add[name](host.get(name))
        add["keyboard_layouts"](";".join(host.get("keyboard_layouts") or ()))
        add["input_methods"](";".join(host.get("input_methods") or ()))
        add["remote_users"](sum(1 for user in host.get("users") or () if user.get("remote_host")))
        for name in _NETWORK:
            add[name](network.get(name))
        vpn = [i for i in network.get("interfaces") or () if i.get("kind") == "vpn"]
        add["vpn_product"](next((i.get("vpn_product") for i in vpn if i.get("vpn_product")), None))
        add["has_vpn_interface"](bool(vpn))
        for name in _INPUT:
            add[name](inp.get(name))
        add["virtual_devices"](";".join(inp.get("virtual_devices") or ()))
        add["has_input"](given is not None)
        for tool in report.get("remote_access") or ():
            _add_tool(tools, rec, tool)
        for session in report.get("sessions") or ():
            for name in _SESSION_COLUMNS[1:]:
                sessions[name].append(session.get(name))
            sessions["rec"].append(rec)
        for probe in network.get("probes") or ():
            for name in _PROBE_COLUMNS[1:]:
                probes[name].append(probe.get(name))
            probes["rec"].append(rec)
        hardware = report.get("hardware") or _EMPTY
        for item in hardware.get("usb") or ():
            _fold(usb, (device, item.get("vendor_id"), item.get("product_id"), item.get("manufacturer"),
                        item.get("product"), item.get("serial")), rec)
        for item in hardware.get("displays") or ():
            _fold(displays, (device, item.get("name"), item.get("manufacturer"), item.get("serial_hash")), rec)
    return _frames(cols, tools, sessions, probes, usb, displays)


def _add_tool(tools: dict[str, list[Any]], rec: int, tool: dict[str, Any]) -> None:
    head = (rec, tool.get("tool"), tool.get("process"), tool.get("started_at"), len(tool.get("listening") or ()))
    connections = tool.get("connections") or (_EMPTY,)
    for connection in connections:
        for name, value in zip(_TOOL_COLUMNS[:5], head):
            tools[name].append(value)
        for name in _TOOL_COLUMNS[5:]:
            tools[name].append(connection.get(name))


def _fold(seen: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], rec: int) -> None:
    entry = seen.get(key)
    if entry is None:
        seen[key] = [rec]
    else:
        entry.append(rec)


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")


def _frames(
    cols: dict[str, list[Any]],
    tools: dict[str, list[Any]],
    sessions: dict[str, list[Any]],
    probes: dict[str, list[Any]],
    usb: dict[tuple[Any, ...], list[int]],
    displays: dict[tuple[Any, ...], list[int]],
) -> Frames:
    reports = pd.DataFrame(cols)
    for name in _TIMES:
        reports[name] = _utc(reports[name])
    for name in _INPUT + ("utc_offset_minutes", "lan_neighbors", "seq", "asn"):
        reports[name] = pd.to_numeric(reports[name], errors="coerce").astype("float64")
    # Sort once so every detector sees each device's records in time order; remap child tables.
    order = reports.sort_values(["device_id", "window_end", "seq"], kind="stable").index.to_numpy()
    reports = reports.iloc[order].reset_index(drop=True)
    new_rec = pd.Series(range(len(order)), index=order).sort_index().to_numpy()

    def child(columns: dict[str, list[Any]]) -> pd.DataFrame:
        frame = pd.DataFrame(columns)
        if len(frame):
            frame["rec"] = new_rec[frame["rec"].to_numpy()]
            frame["device_id"] = reports["device_id"].to_numpy()[frame["rec"].to_numpy()]
        else:
            frame["device_id"] = pd.Series(dtype=object)
        return frame.sort_values("rec", kind="stable").reset_index(drop=True)

    tool_frame = child(tools)
    # A live session is an established TCP connection with a known peer.
    tool_frame["live"] = tool_frame["state"].astype(str).str.upper().eq("ESTABLISHED") & tool_frame["remote_ip"].notna()
    for name in ("rtt_ms", "min_rtt_ms"):
        tool_frame[name] = pd.to_numeric(tool_frame[name], errors="coerce").astype("float64")
    probe_frame = child(probes)
    for name in ("rtt_min_ms", "rtt_median_ms"):
        probe_frame[name] = pd.to_numeric(probe_frame[name], errors="coerce").astype("float64")
    return Frames(
        reports=reports,
        tools=tool_frame,
        sessions=child(sessions),
        probes=probe_frame,
        usb=_folded(usb, _USB_KEY, new_rec),
        displays=_folded(displays, _DISPLAY_KEY, new_rec),
    )


def _folded(seen: dict[tuple[Any, ...], list[int]], key: tuple[str, ...], new_rec: Any) -> pd.DataFrame:
    rows = []
    for identity, recs in seen.items():
        renumbered = new_rec[recs]
        rows.append(identity + (int(renumbered.min()), int(renumbered.max()), len(recs)))
    return pd.DataFrame(rows, columns=list(key) + ["first_rec", "last_rec", "reports"])
