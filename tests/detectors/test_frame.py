"""Flattening: records in any order become time-sorted frames whose child tables point at the right record."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from detector_records import connection, make_record, tool, user_input

from farmwatch.detectors.frame import WINDOW_LAYOUT, RecordError, flatten, read_records, reduce_json, reduce_record

PIKVM = {"usb": [{"vendor_id": "1d6b", "product_id": "0104", "manufacturer": "PiKVM", "product": "PiKVM Composite Device",
                  "interface_classes": ["hid"]}], "displays": []}


def test_records_in_any_order_are_sorted_and_children_follow() -> None:
    records = [
        make_record("b", 10, remote_access=[tool("rustdesk", "rustdesk", connection("10.0.0.5", "outbound"))]),
        make_record("a", 5, hardware=PIKVM),
        make_record("b", 0),
        make_record("a", 0, hardware=PIKVM, input=user_input(injected=7)),
    ]
    frames = flatten(records)
    reports = frames.reports
    assert list(zip(reports["device_id"], reports["seq"])) == [("a", 1), ("a", 2), ("b", 1), ("b", 3)]
    assert reports["window_end"].is_monotonic_increasing is False  # sorted by device first, then time
    [row] = frames.tools.to_dict("records")
    assert (row["device_id"], row["rec"], row["tool"], bool(row["live"])) == ("b", 3, "rustdesk", True)
    assert frames.times(frames.tools).iloc[0] == reports["window_end"].iloc[3]
    [usb] = frames.usb.to_dict("records")
    assert (usb["device_id"], usb["first_rec"], usb["last_rec"], usb["reports"]) == ("a", 0, 1, 2)
    assert reports["injected_events"].iloc[0] == 7 and math.isnan(reports["injected_events"].iloc[1])
    assert list(reports["has_input"]) == [True, False, False, False]



def test_device_codes_number_devices_in_id_order() -> None:
    records = [make_record(device, seq) for device, seq in (("c", 0), ("a", 5), ("b", 0), ("a", 0), ("c", 5))]
    reports = flatten(records).reports
    assert list(reports["device_code"]) == [0, 0, 1, 2, 2]  # a, a, b, c, c: dense, ordered as the ids
    assert reports["device_code"].dtype.kind == "i"
    assert flatten([]).reports["device_code"].empty

def test_a_tool_without_connections_is_one_row_without_a_peer() -> None:
    frames = flatten([make_record("a", 0, remote_access=[tool("anydesk", "AnyDesk")])])
    [row] = frames.tools.to_dict("records")
    assert row["remote_ip"] is None and not row["live"]


def test_no_records_gives_empty_frames() -> None:
    frames = flatten([])
    assert frames.reports.empty and frames.tools.empty and frames.usb.empty


@pytest.mark.parametrize("broken", [{"report": {"device_id": "a"}}, {"received_at": "x"}, {"report": "text"}])
def test_a_record_without_device_or_window_is_named(broken: dict) -> None:
    with pytest.raises(RecordError, match="record 2: report.device_id and report.window_end are required"):
        flatten([make_record("a", 0), broken])


def test_an_unreadable_window_end_is_named() -> None:
    broken = make_record("a", 5)
    broken["report"]["window_end"] = "yesterday"
    # reduce_record refuses it with the contract's time bounds (5ffddb5), naming the field and value
    with pytest.raises(RecordError, match="record 2: report.window_end 'yesterday' is not a time from 2000"):
        flatten([make_record("a", 0), broken])


def test_equal_strings_from_different_records_are_held_once() -> None:
    records = [make_record("a", 0), make_record("a", 5)]
    for record in records:  # separate string objects, as parsing separate JSON lines gives
        record["report"]["device_id"] = "".join(["lap", "top-1"])
        record["source_ip"] = "".join(["68.2.", "14.77"])
    reports = flatten(records).reports
    assert reports["device_id"].iloc[0] is reports["device_id"].iloc[1]
    assert reports["source_ip"].iloc[0] is reports["source_ip"].iloc[1]


def test_hardware_frames_hold_only_what_the_contract_carries() -> None:
    """No column for a field agents never send (USB serials are not collected)."""
    from farmwatch.contract import Display, UsbDevice

    usb = {"vendor_id": "2b04", "product_id": "c00a", "manufacturer": "Aten", "product": "KVM", "interface_classes": []}
    display = {"name": "PiKVM", "manufacturer": "LNX", "serial_hash": None}
    frames = flatten([make_record("d", 5, hardware={"usb": [usb], "displays": [display]})])
    bookkeeping = {"device_id", "first_rec", "last_rec", "reports"}
    assert set(frames.usb.columns) - bookkeeping == set(UsbDevice.model_fields) - {"interface_classes"}
    assert set(frames.displays.columns) - bookkeeping == set(Display.model_fields)
    assert frames.usb.iloc[0]["vendor_id"] == "2b04"


def test_one_reduction_from_a_dict_from_stored_json_and_from_the_reader(tmp_path: Path) -> None:
    """The collector reduces a stored report from its JSON text (reduce_json), farmwatch-detect from
    its reader's parsed records, callers with dicts through reduce_record: one window, value for value
    and type for type (1 is not 1.0 is not True)."""
    records = [
        make_record("a", 0, hardware=PIKVM, input=user_input(injected=7),
                    remote_access=[tool("rustdesk", "rustdesk", connection("10.0.0.5", "outbound", 12.5))]),
        make_record("b", 5, geo={"country": "US", "asn": 7922, "asn_org": "Comcast", "network_kind": "residential"}),
    ]
    records[1]["report"]["sessions"] = [{"kind": "ssh", "user": "u", "remote_ip": "10.0.0.9", "rtt_ms": 1,
                                         "state": "ESTABLISHED"}]
    records[1]["report"]["network"] = {"interfaces": [{"kind": "vpn", "vpn_product": None},
                                                      {"kind": "vpn", "vpn_product": "WireGuard"}],
                                       "probes": [{"target": "us-east", "sent": 3, "received": 3, "rtt_min_ms": 20,
                                                   "rtt_median_ms": 21.5}]}
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))

    def typed(window: Any) -> str:
        return repr([[(type(value).__name__, value) for value in row] for row in [window.row, *window.tools,
                     *window.sessions, *window.probes, *window.usb, *window.displays]])

    from_dicts = [typed(reduce_record(record)) for record in records]
    assert [typed(reduce_json(orjson.dumps(record))) for record in records] == from_dicts
    assert [typed(reduce_record(record)) for record in read_records(path)] == from_dicts
    assert reduce_record(records[1]).row[WINDOW_LAYOUT["reports"].index("vpn_product")] == "WireGuard"


@pytest.mark.parametrize(("line", "message"), [
    (b'{"report": {"device_id": "a", "window_end": "2026-11-02T13:40:00Z", "host": "text"}}',
     "line 1: not a record (Expected `object | null`, got `str` - at `$.report.host`)"),
    (b'{"report": {"device_id": "a", "probes": 1', "line 1: not valid JSON"),
    (b'[1, 2]', "line 1: expected a JSON object"),
])
def test_the_reader_names_a_line_that_is_no_record(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(line + b"\n")
    with pytest.raises(RecordError, match=re.escape(f"{path} {message}")):
        list(read_records(path))
    with pytest.raises(RecordError, match=re.escape(f"report 7: {message.removeprefix('line 1: ')}")):
        reduce_json(line, "report 7")
