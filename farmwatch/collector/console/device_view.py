"""What the device page shows, computed from that device's stored ingest records.

Every figure here is arithmetic over records the store already holds (no detector is re-run): the
activity heatmap, the distance picture, the remote-access timeline, the hardware seen and the
network identities the device used. Chart geometry is computed here and drawn as SVG by the
templates, so the page needs no JavaScript and prints as it shows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from farmwatch.contract import Anchor, RosterEntry
from farmwatch.detectors.distance import great_circle_km, light_floor_ms, likely_min_distance_km, max_distance_km
from farmwatch.detectors.networks import peer_country
from farmwatch.detectors.signals.ipkvm import display_identity, usb_identity
from farmwatch.detectors.signals.working_hours import OFFSETS, workday_fit
from farmwatch.times import parse_utc

ACTIVE_SECONDS = 30.0  # a window counts as active from here (the working-hours detector's default)


@dataclass(frozen=True)
class Heatmap:
    """Active minutes per (day, hour) in one time zone."""

    zone: str  # label, e.g. "America/New_York" or "UTC+9"
    days: list[str]
    minutes: list[list[float]]  # [day][hour]
    workday_share: float  # share of active windows inside 09-18 there


def _zone(name: str | None) -> tuple[str, Any]:
    try:
        return (name, ZoneInfo(name)) if name else ("UTC", timezone.utc)
    except (ZoneInfoNotFoundError, ValueError):
        return f"UTC (unknown zone {name!r})", timezone.utc


def _fixed(offset_hours: int) -> tuple[str, Any]:
    return f"UTC{offset_hours:+d}", timezone(timedelta(hours=offset_hours))


def heatmaps(records: list[dict[str, Any]], roster_zone: str | None) -> list[Heatmap]:
    """The roster zone's heatmap, then the one of the whole-hour offset whose 09-18 explains the most
    activity (when that is another offset)."""
    active = []
    for record in records:
        timing = record["report"].get("input") or {}
        seconds = float(timing.get("active_seconds") or 0.0)
        if seconds > 0:
            active.append((parse_utc(record["report"]["window_end"]), seconds))
    roster_label, roster_tz = _zone(roster_zone)
    zones = [(roster_label, roster_tz)]
    hist = np.bincount([at.hour for at, s in active if s >= ACTIVE_SECONDS], minlength=24).astype(float)
    fit = workday_fit(hist)
    best = int(OFFSETS[int(np.argmax(fit))])
    if active and fit.max() > 0:
        middle = active[len(active) // 2][0]
        roster_offset = (middle.astimezone(roster_tz).utcoffset() or timedelta()).total_seconds() / 3600
        if best != roster_offset:
            zones.append(_fixed(best))
    return [_heatmap(active, label, tz) for label, tz in zones]


def _heatmap(active: list[tuple[datetime, float]], label: str, tz: Any) -> Heatmap:
    grid: dict[str, list[float]] = defaultdict(lambda: [0.0] * 24)
    inside = counted = 0
    for at, seconds in active:
        local = at.astimezone(tz)
        grid[local.strftime("%a %d %b")][local.hour] += seconds / 60.0
        if seconds >= ACTIVE_SECONDS:
            counted += 1
            inside += 9 <= local.hour < 18
    ordered = _in_time_order(active, tz)
    return Heatmap(label, ordered, [[min(v, 60.0) for v in grid[day]] for day in ordered],
                   inside / counted if counted else 0.0)


def _in_time_order(active: list[tuple[datetime, float]], tz: Any) -> list[str]:
    seen: dict[str, None] = {}
    for at, _ in sorted(active):
        seen.setdefault(at.astimezone(tz).strftime("%a %d %b"), None)
    return list(seen)


@dataclass(frozen=True)
class DistanceRow:
    label: str
    kind: str  # "anchor" | "session"
    measured_ms: float
    floor_ms: float | None  # anchors: the least RTT physics allows from the claimed city
    note: str
    impossible: bool  # measured below the floor: the laptop cannot be in the claimed city


@dataclass
class DistancePicture:
    city: str | None
    rows: list[DistanceRow] = field(default_factory=list)
    scale_ms: float = 100.0


def distance_picture(records: list[dict[str, Any]], entry: RosterEntry | None, anchors: list[Anchor]) -> DistancePicture:
    """Anchors' minimum RTT against the light-in-fibre floor from the claimed city, and every session
    peer's minimum RTT with the distance it implies."""
    claimed = entry is not None and entry.latitude is not None and entry.longitude is not None
    picture = DistancePicture(city=(f"{entry.city}, {entry.country}" if entry and entry.city else None))
    best_probe: dict[str, float] = {}
    peers: dict[tuple[str, str], float] = {}
    for record in records:
        report = record["report"]
        for probe in (report.get("network") or {}).get("probes") or []:
            if probe.get("rtt_min_ms") is not None:
                best_probe[probe["target"]] = min(best_probe.get(probe["target"], 1e9), probe["rtt_min_ms"])
        for via, peer, rtt in _session_paths(report):
            peers[(via, peer)] = min(peers.get((via, peer), 1e9), rtt)
    by_name = {anchor.name: anchor for anchor in anchors}
    for name, rtt in sorted(best_probe.items()):
        anchor = by_name.get(name)
        floor = None
        if claimed and anchor is not None:
            floor = float(light_floor_ms(great_circle_km(entry.latitude, entry.longitude,  # type: ignore[union-attr, arg-type]
                                                         anchor.latitude, anchor.longitude)))
        impossible = floor is not None and rtt < floor
        city = entry.city if entry is not None else None
        note = (f"impossible from {city}: light needs {floor:.1f} ms" if impossible else
                f"possible from {city} (light needs {floor:.1f} ms)" if floor is not None else
                "no claimed city to compare")
        picture.rows.append(DistanceRow(f"anchor {name}", "anchor", rtt, floor, note, impossible))
    for (via, peer), rtt in sorted(peers.items(), key=lambda item: -item[1]):
        likely, most = float(likely_min_distance_km(rtt)), float(max_distance_km(rtt))
        country = peer_country(peer)
        where = f" (registered in {country})" if country else ""
        note = (f"controller likely ≥ {likely:,.0f} km away, ≤ {most:,.0f} km (light)"
                if likely > 0 else f"controller within {most:,.0f} km (light bound)")
        picture.rows.append(DistanceRow(f"{via} from {peer}{where}", "session", rtt, None, note, False))
    values = [row.measured_ms for row in picture.rows] + [row.floor_ms or 0.0 for row in picture.rows]
    picture.scale_ms = max(values + [50.0]) * 1.1
    return picture


def _session_paths(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(via, peer, min RTT) of inbound remote-access connections and remote sessions in one report."""
    paths = []
    for tool in report.get("remote_access") or []:
        for connection in tool.get("connections") or []:
            rtt = connection.get("min_rtt_ms", connection.get("rtt_ms"))
            if connection.get("direction") == "inbound" and rtt is not None:
                paths.append((tool["tool"], connection["remote_ip"], float(rtt)))
    for session in report.get("sessions") or []:
        rtt = session.get("min_rtt_ms", session.get("rtt_ms"))
        if session.get("remote_ip") and rtt is not None:
            paths.append((session["kind"], session["remote_ip"], float(rtt)))
    return paths


@dataclass(frozen=True)
class Lane:
    """One remote-access tool or session peer, and the stretches of time it was connected."""

    label: str
    spans: list[tuple[float, float]]  # fractions 0..1 of the timeline's width
    hours: float


@dataclass(frozen=True)
class Timeline:
    start: datetime | None
    end: datetime | None
    lanes: list[Lane]
    ticks: list[tuple[float, str]]  # (fraction, label) at each midnight UTC


def _span(seen: dict[str, Any], start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """When a connection or session was open: the agent's socket watcher's first/last seen where it
    sent them (a session may begin and end inside one window), else its report's whole window."""
    if seen.get("first_seen") and seen.get("last_seen"):
        return max(parse_utc(seen["first_seen"]), start), parse_utc(seen["last_seen"])
    return start, end


def remote_timeline(records: list[dict[str, Any]]) -> Timeline:
    """When each remote-access tool held a connection, or a remote session was open (by report window,
    or as the agent watched it)."""
    if not records:
        return Timeline(None, None, [], [])
    windows: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for record in records:
        report = record["report"]
        start, end = parse_utc(report["window_start"]), parse_utc(report["window_end"])
        for tool in report.get("remote_access") or []:
            for connection in tool.get("connections") or []:
                windows[f"{tool['tool']} {connection['direction']} {connection['remote_ip']}"].append(
                    _span(connection, start, end))
        for session in report.get("sessions") or []:
            windows[f"{session['kind']} session from {session.get('remote_ip') or 'console'}"].append(
                _span(session, start, end))
    first = parse_utc(records[0]["report"]["window_start"])
    last = max(parse_utc(r["report"]["window_end"]) for r in records)
    width = max((last - first).total_seconds(), 1.0)
    lanes = []
    for label, spans in sorted(windows.items()):
        merged: list[list[datetime]] = []
        for start, end in sorted(set(spans)):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        lanes.append(Lane(label, [((a - first).total_seconds() / width, (b - first).total_seconds() / width)
                                  for a, b in merged],
                          sum((b - a).total_seconds() for a, b in merged) / 3600))
    ticks = []
    day = first.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while day < last:
        ticks.append(((day - first).total_seconds() / width, day.strftime("%d %b")))
        day += timedelta(days=1)
    return Timeline(first, last, lanes, ticks)


@dataclass(frozen=True)
class HardwareItem:
    kind: str  # "usb" | "display"
    ident: str
    name: str
    reports: int
    flag: str | None  # why it matters, when it is a known IP-KVM identity


def hardware(records: list[dict[str, Any]]) -> list[HardwareItem]:
    """Every USB device and display seen, flagged items first."""
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    flags: dict[tuple[str, str, str], str | None] = {}
    for record in records:
        facts = record["report"].get("hardware") or {}
        for usb in facts.get("usb") or []:
            key = ("usb", f"{usb['vendor_id']}:{usb['product_id']}",
                   " / ".join(str(part) for part in (usb.get("manufacturer"), usb.get("product")) if part))
            seen[key] += 1
            if key not in flags:
                identity = usb_identity(usb["vendor_id"], usb["product_id"], usb.get("manufacturer"), usb.get("product"))
                flags[key] = None if identity is None else (
                    f"{identity.device} default identity" if identity.kind == "usb"
                    else "generic Linux USB gadget, the id re-branded IP-KVMs use")
        for display in facts.get("displays") or []:
            key = ("display", display.get("manufacturer") or "", display.get("name") or "(no name)")
            seen[key] += 1
            if key not in flags:
                identity = display_identity(display.get("name"))
                flags[key] = None if identity is None else f"video capture of a {identity.device}"
    items = [HardwareItem(kind, ident, name, count, flags.get((kind, ident, name)))
             for (kind, ident, name), count in seen.items()]
    return sorted(items, key=lambda item: (item.flag is None, item.kind, item.ident, item.name))


@dataclass(frozen=True)
class NetworkIdentity:
    kind: str  # "egress IP" | "gateway MAC (hash)" | "Wi-Fi BSSID (hash)"
    value: str
    network_kind: str | None
    hours: set[int]  # UTC hours (since the epoch) the device reported from it


IDENTITY_FIELDS = (("egress IP", None), ("gateway MAC (hash)", "gateway_mac_hash"), ("Wi-Fi BSSID (hash)", "wifi_bssid_hash"))


def network_identities(records: list[dict[str, Any]]) -> dict[tuple[str, str], NetworkIdentity]:
    """The networks a device reported from, keyed by (kind, value), with the hours it was on each."""
    found: dict[tuple[str, str], NetworkIdentity] = {}
    for record in records:
        hour = int(parse_utc(record["received_at"]).timestamp() // 3600)
        network = record["report"].get("network") or {}
        for kind, column in IDENTITY_FIELDS:
            value = record["source_ip"] if column is None else network.get(column)
            if not value:
                continue
            key = (kind, value)
            if key not in found:
                found[key] = NetworkIdentity(kind, value, record["geo"].get("network_kind") if column is None else None,
                                             set())
            found[key].hours.add(hour)
    return found
