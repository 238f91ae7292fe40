"""The device page's figures (farmwatch/collector/console/device_view.py) from hand-written records,
with exact expected values: heatmap cells in the roster's zone and the best-fitting one, the
distance picture against the light-in-fibre floor, the remote-access timeline, IP-KVM hardware."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from farmwatch.collector.console import device_view
from farmwatch.contract import Anchor, RosterEntry

START = datetime(2026, 11, 30, 0, 0, tzinfo=timezone.utc)  # a Monday


def _stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def record(end: datetime, active: float = 0.0, **report: Any) -> dict[str, Any]:
    """A minimal ingest record whose 5-minute window ends at ``end``."""
    return {
        "received_at": _stamp(end), "source_ip": report.pop("source_ip", "203.0.113.9"),
        "geo": {"country": "US", "asn": None, "asn_org": None, "network_kind": "residential"},
        "report": {"device_id": "dev-1", "seq": 1, "window_start": _stamp(end - timedelta(minutes=5)),
                   "window_end": _stamp(end), "input": {"active_seconds": active}, **report},
    }


BOSTON = RosterEntry(device_id="dev-1", employee_id="E1", country="US", city="Boston", latitude=42.36,
                     longitude=-71.06, timezone="America/New_York", approved_tools=[])


def test_heatmap_cells_are_active_minutes_in_the_roster_zone_beside_the_best_fitting_zone() -> None:
    # Active 00:00-09:00 UTC on Monday and Tuesday: 19:00-04:00 in Boston, 09:00-18:00 in UTC+9.
    records = [record(START + timedelta(days=day, hours=hour, minutes=5), active=240.0)
               for day in (0, 1) for hour in range(0, 9)]
    roster_map, best_map = device_view.heatmaps(records, "America/New_York")
    assert roster_map.zone == "America/New_York" and best_map.zone == "UTC+9"
    assert roster_map.days == ["Sun 29 Nov", "Mon 30 Nov", "Tue 01 Dec"]
    assert roster_map.minutes[0][19:] == [4.0] * 5 and roster_map.minutes[1][:4] == [4.0] * 4
    assert roster_map.minutes[1][19:] == [4.0] * 5 and roster_map.minutes[2][:4] == [4.0] * 4
    assert sum(map(sum, roster_map.minutes)) == pytest.approx(18 * 4.0)
    assert roster_map.workday_share == 0.0
    assert best_map.days == ["Mon 30 Nov", "Tue 01 Dec"]
    assert best_map.minutes[0][9:18] == [4.0] * 9 and best_map.workday_share == 1.0


def test_one_heatmap_when_the_roster_zone_explains_the_activity() -> None:
    records = [record(START + timedelta(hours=hour + 5), active=120.0) for hour in range(9, 17)]  # 09-17 in Boston
    (only,) = device_view.heatmaps(records, "America/New_York")
    assert only.workday_share == 1.0


def test_distance_picture_compares_anchor_rtts_with_the_light_floor_from_the_claimed_city() -> None:
    anchors = [Anchor(name="us-east", address="198.51.100.1", port=443, latitude=40.71, longitude=-74.01),
               Anchor(name="us-west", address="198.51.100.2", port=443, latitude=37.77, longitude=-122.42)]
    probes = [{"target": "us-east", "rtt_min_ms": 30.0}, {"target": "us-west", "rtt_min_ms": 4.6}]
    records = [record(START, network={"probes": probes}),
               record(START + timedelta(minutes=5), network={"probes": [{"target": "us-east", "rtt_min_ms": 25.0}]},
                      remote_access=[{"tool": "anydesk", "connections": [
                          {"remote_ip": "175.45.176.71", "direction": "inbound", "min_rtt_ms": 182.0},
                          {"remote_ip": "192.0.2.1", "direction": "outbound", "min_rtt_ms": 5.0}]}])]
    picture = device_view.distance_picture(records, BOSTON, anchors)
    east, west, session = picture.rows
    assert (east.label, east.measured_ms, east.impossible) == ("anchor us-east", 25.0, False)
    assert east.floor_ms == pytest.approx(3.06, abs=0.01)  # Boston to New York: 306 km at 100 km per ms
    assert (west.measured_ms, west.impossible) == (4.6, True)
    assert west.floor_ms == pytest.approx(43.34, abs=0.01) and west.note.startswith("impossible from Boston")
    assert session.label == "anydesk from 175.45.176.71 (registered in KP)" and session.measured_ms == 182.0
    assert "6,480 km" in session.note  # (182 - 20 ms) x 40 km/ms, the conservative path model
    assert picture.scale_ms == pytest.approx(182.0 * 1.1)


def test_timeline_merges_consecutive_windows_of_one_peer() -> None:
    session = [{"tool": "rustdesk", "connections": [{"remote_ip": "104.18.9.77", "direction": "outbound"}]}]
    records = [record(START + timedelta(minutes=5 * step), remote_access=session if step in (1, 2, 4) else [])
               for step in range(1, 7)]
    line = device_view.remote_timeline(records)
    (lane,) = line.lanes
    assert lane.label == "rustdesk outbound 104.18.9.77"
    assert lane.spans == [(0.0, pytest.approx(2 / 6)), (pytest.approx(3 / 6), pytest.approx(4 / 6))]
    assert lane.hours == pytest.approx(15 / 60)


def test_timeline_draws_a_watched_session_from_its_first_to_its_last_sighting() -> None:
    """A session the agent saw begin and end inside one window spans those minutes, not the window."""
    ended = {"kind": "ssh", "remote_ip": "175.45.176.71", "state": "CLOSED",
             "first_seen": _stamp(START + timedelta(minutes=6)), "last_seen": _stamp(START + timedelta(minutes=9))}
    records = [record(START + timedelta(minutes=5)), record(START + timedelta(minutes=10), sessions=[ended])]
    (lane,) = device_view.remote_timeline(records).lanes
    assert lane.label == "ssh session from 175.45.176.71"
    assert lane.spans == [(pytest.approx(6 / 10), pytest.approx(9 / 10))]
    assert lane.hours == pytest.approx(3 / 60)


def test_hardware_flags_ip_kvm_identities_first() -> None:
    usb = [{"vendor_id": "046d", "product_id": "c52b", "manufacturer": "Logitech", "product": "USB Receiver"},
           {"vendor_id": "1d6b", "product_id": "0104", "manufacturer": "PiKVM", "product": "PiKVM Composite Device"}]
    displays = [{"name": "PiKVM V4 Plus", "manufacturer": "PKV"}, {"name": "eDP-1 panel", "manufacturer": "BOE"}]
    items = device_view.hardware([record(START, hardware={"usb": usb, "displays": displays})] * 2)
    assert [(item.kind, item.ident, item.flag) for item in items] == [
        ("display", "PKV", "video capture of a PiKVM"),
        ("usb", "1d6b:0104", "PiKVM default identity"),
        ("display", "BOE", None),
        ("usb", "046d:c52b", None),
    ]
    assert all(item.reports == 2 for item in items)


def test_network_identities_count_the_hours_on_each() -> None:
    network = {"gateway_mac_hash": "aa" * 32, "wifi_bssid_hash": None}
    records = [record(START + timedelta(minutes=20 * step), network=network) for step in range(1, 7)]
    found = device_view.network_identities(records)
    assert sorted((kind, len(item.hours)) for (kind, _), item in found.items()) == [
        ("egress IP", 3), ("gateway MAC (hash)", 3)]
    assert found[("egress IP", "203.0.113.9")].network_kind == "residential"
