"""Hand-made ingest records for detector unit tests: a minimal valid record plus chosen sections."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from collections.abc import Sequence
from typing import Any

from farmwatch.contract import Anchor, IngestRecord, RosterEntry

START = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)  # a Monday, 09:00 in Chicago
"""The first window of every hand-made device history."""


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_record(device: str, minutes: float, seq: int | None = None, geo: dict[str, Any] | None = None,
                source_ip: str = "68.2.14.77", **sections: Any) -> dict[str, Any]:
    """An ingest record of ``device`` for the 5-minute window ending ``minutes`` after START."""
    end = START + timedelta(minutes=minutes)
    record = {
        "received_at": _time(end),
        "source_ip": source_ip,
        "geo": {"country": "US", "asn": 22773, "asn_org": "Cox", "network_kind": "residential", **(geo or {})},
        "report": {
            "schema": "farmwatch.report/v1",
            "device_id": device,
            "seq": seq if seq is not None else int(minutes // 5) + 1,
            "window_start": _time(end - timedelta(minutes=5)),
            "window_end": _time(end),
            "agent": {"version": "0.1.0", "os": "windows", "os_version": "10", "hostname": device},
            **sections,
        },
    }
    IngestRecord.model_validate_json(json.dumps(record))  # hand-made records must still be valid wire records
    return record


def tool(name: str, process: str, *connections: dict[str, Any]) -> dict[str, Any]:
    """A remote_access[] entry."""
    return {"tool": name, "process": process, "pid": 4242, "started_at": None, "listening": [],
            "connections": list(connections)}


def connection(remote_ip: str, direction: str = "inbound", min_rtt_ms: float | None = None,
               state: str = "ESTABLISHED", remote_port: int = 7070) -> dict[str, Any]:
    return {"remote_ip": remote_ip, "remote_port": remote_port, "local_port": 50000, "state": state,
            "direction": direction, "rtt_ms": min_rtt_ms, "min_rtt_ms": min_rtt_ms}


def user_input(injected: int = 0, **values: Any) -> dict[str, Any]:
    """An input section of an ordinary local typist, with overrides."""
    base = {"seconds_observed": 300.0, "active_seconds": 200.0, "key_events": 400, "mouse_events": 6000,
            "injected_events": injected, "virtual_devices": [], "key_interval_ms_p10": 70.0,
            "key_interval_ms_p50": 160.0, "key_interval_ms_p90": 520.0, "key_burst_fraction": 0.01,
            "mouse_rate_hz_median": 110.0, "mouse_jump_fraction": 0.002}
    return {**base, **values}


def roster_entry(device: str, approved: tuple[str, ...] = (), employee: str | None = None,
                 lat: float = 41.88, lon: float = -87.63, country: str = "US",
                 tz: str = "America/Chicago") -> RosterEntry:
    return RosterEntry(device_id=device, employee_id=employee or f"E-{device}", country=country, city=None,
                       latitude=lat, longitude=lon, timezone=tz, approved_tools=list(approved))


ANCHORS = [
    Anchor(name="us-east", address="203.0.113.10", port=443, latitude=39.04, longitude=-77.49),
    Anchor(name="us-central", address="203.0.113.20", port=443, latitude=32.78, longitude=-96.80),
    Anchor(name="us-west", address="203.0.113.30", port=443, latitude=37.34, longitude=-121.89),
]

NOW = START + timedelta(days=3)


def run(cls: type, records: list[dict[str, Any]], roster: Sequence[RosterEntry] = (), anchors: Sequence[Anchor] = (),
        config: Any = None, **params: Any) -> dict[str, Any]:
    """Fit and run one detector; its findings by device id (one finding per device expected)."""
    from farmwatch.detectors.base import Context
    from farmwatch.detectors.config import DetectionConfig
    from farmwatch.detectors.frame import flatten

    context = Context({e.device_id: e for e in roster}, {a.name: a for a in anchors}, NOW, config or DetectionConfig())
    frames = flatten(records)
    found = cls(**params).fit(frames, context).detect(frames, context)
    return {item.device_id: item.finding for item in found}


def probe(target: str, rtt_min: float) -> dict[str, Any]:
    """A network.probes[] entry."""
    return {"target": target, "address": "203.0.113.1", "method": "tcp", "sent": 3, "received": 3,
            "rtt_min_ms": rtt_min, "rtt_median_ms": rtt_min + 1, "rtt_max_ms": rtt_min + 5}


def network(probes: Sequence[dict[str, Any]] = (), gateway: str | None = None, bssid: str | None = None,
            vpn: str | None = None) -> dict[str, Any]:
    """A network section; ``gateway``/``bssid`` are short names turned into 64-hex salted-hash stand-ins."""
    def as_hash(name: str | None) -> str | None:
        return None if name is None else (name.encode().hex() * 64)[:64]
    interfaces = [{"name": "wlan0", "kind": "wifi", "vpn_product": None}]
    if vpn:
        interfaces.append({"name": "tun0", "kind": "vpn", "vpn_product": vpn})
    return {"interfaces": interfaces, "gateway_ip": "192.168.1.1", "gateway_mac_hash": as_hash(gateway),
            "wifi_bssid_hash": as_hash(bssid), "lan_neighbors": 4, "probes": list(probes)}


def host(tz: str = "America/Chicago", offset: int = -360, layouts: tuple[str, ...] = ("00000409",),
         imes: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"timezone": tz, "utc_offset_minutes": offset, "locale": "en_US", "keyboard_layouts": list(layouts),
            "input_methods": list(imes), "boot_time": None, "users": []}
