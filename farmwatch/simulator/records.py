"""Turn simulated devices into ingest records, one per 5-minute window the laptop is awake.

Input timing follows the published observations: a local typist's 10th-percentile key interval sits in the tens of
milliseconds with almost no bunched keys and mouse events at device rate (60-125 Hz); through a
remote-control pipe keys arrive in bursts (intervals of a few ms: input batched per packet,
US8972563), the mouse at network rate (US9319422B2), in jumpier paths (BioCatch). Remote tools on
Windows mark their input injected (LLKHF_INJECTED; TeamViewer and ConnectWise, NVDA issue 8452);
RDP and IP-KVM input is not marked.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from farmwatch.simulator.fleet import RELAY_PORTS, RMM_TOOLS, Device, Network
from farmwatch.simulator.places import ANCHORS, VPN_CONCENTRATOR, distance_km, path_rtt_ms

START = datetime(2026, 11, 2, 0, 0, tzinfo=timezone.utc)  # a Monday
WINDOW = timedelta(minutes=5)
SLOTS_PER_DAY = 288
OPERATOR_TZ = "Asia/Pyongyang"  # UTC+9


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=64)
def _clock(tz: str, days: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Local hour (float) and weekday of every slot's end, and the UTC offset (minutes) per day."""
    zone = ZoneInfo(tz)
    hours, weekdays, offsets = [], [], []
    for slot in range(days * SLOTS_PER_DAY):
        local = (START + WINDOW * (slot + 1)).astimezone(zone)
        hours.append(local.hour + local.minute / 60)
        weekdays.append(local.weekday())
        if slot % SLOTS_PER_DAY == 0:
            offsets.append(int(local.utcoffset().total_seconds() // 60))  # type: ignore[union-attr]
    return np.array(hours), np.array(weekdays), offsets


class Simulator:
    """Generates each device's records (device by device, windows in time order)."""

    def __init__(self, seed: int, days: int) -> None:
        self.seed, self.days = seed, days
        self.ends = [START + WINDOW * (slot + 1) for slot in range(days * SLOTS_PER_DAY)]
        self.end_stamps = [_stamp(t) for t in self.ends]
        self.start_stamps = [_stamp(t - WINDOW) for t in self.ends]
        self._rtt: dict[tuple[str, str], float] = {}

    def records(self, device: Device, index: int) -> Iterator[dict[str, Any]]:
        """The device's records. The agent runs as a service: its windows tile (a window after a sleep
        starts where the last one ended), except after the laptop was shut down (a new boot time) or
        the agent was not running (``Device.agent_stops``; a reinstall, ``seq_reset_day``, is one,
        followed by a re-enrolment the collector counts in ``enrolments``)."""
        rng = np.random.default_rng([self.seed, index])
        plan = self._plan(device, rng)
        seq = 0
        boot = _stamp(START - timedelta(days=int(rng.integers(1, 20))))
        life = np.random.default_rng([self.seed, index, 16])  # its own stream: the rest stays as it was
        # A third of employees switch their laptop off at night; racked farm laptops stay on.
        shuts_down = device.shuts_down or (device.label == "legit" and life.random() < 0.35)
        stops = list(device.agent_stops)
        reinstall = None
        if device.seq_reset_day is not None:  # agent state wiped and reinstalled on the running system
            reinstall = device.seq_reset_day * SLOTS_PER_DAY + 100
            stops.append((reinstall - int(life.integers(8, 24)), reinstall))
        # Someone stops the agent on a laptop that is awake: a stop drawn while it slept starts when it wakes.
        awake = [slot for slot, _ in plan]
        stopped: set[int] = set()
        for first, last in stops:
            begins = next((slot for slot in awake if slot >= first), None)
            if begins is not None:
                stopped.update(range(begins, begins + last - first))
        for _ in range(device.agent_restarts):  # an upgrade restarts the service while the laptop is awake
            if awake:
                stopped.add(awake[int(life.integers(len(awake)))])
        plan = [(slot, step) for slot, step in plan if slot not in stopped]
        enrolments, previous = 1, None
        for slot, (where, active, state) in plan:
            seq += 1
            start = self.start_stamps[slot]
            if previous is not None and slot > previous + 1:
                if any(previous < s < slot for s in stopped):
                    pass  # the agent was not running: a hole, the same boot
                elif shuts_down and slot - previous >= 24:  # switched off for the night: a new boot
                    boot = _stamp(self.ends[slot] - WINDOW - timedelta(seconds=int(life.integers(40, 200))))
                else:
                    start = self.end_stamps[previous]  # asleep, the agent kept running: the window grows
            if reinstall is not None and previous is not None and previous < reinstall <= slot:
                enrolments += 1
            if device.reenrol_slot is not None and previous is not None and previous < device.reenrol_slot <= slot:
                enrolments += 1  # reimaged by IT: enrolled again after a new boot
                boot = _stamp(self.ends[slot] - WINDOW - timedelta(minutes=int(life.integers(5, 30))))
            conflicts = device.seq_conflicts[1] if device.seq_conflicts and slot >= device.seq_conflicts[0] else 0
            record = self._record(device, slot, seq, where, active, state, boot, rng)
            record["report"]["window_start"] = start
            record.update(enrolments=enrolments, seq_conflicts=conflicts)
            previous = slot
            yield record

    # -- when and where ------------------------------------------------------------------------
    def _plan(self, device: Device, rng: np.random.Generator) -> list[tuple[int, tuple[Network, bool, str]]]:
        hours, weekdays, _ = _clock(device.claimed.timezone, self.days)
        if device.label == "farm":
            return self._farm_plan(device, rng, hours, weekdays)
        plan = []
        for day in range(self.days):
            start_h = rng.normal(8.6, 0.6)
            end_h = rng.normal(17.4, 0.8)
            evening = rng.random() < 0.3
            weekend_use = rng.random() < 0.15
            trip = device.trip
            for slot in range(day * SLOTS_PER_DAY, (day + 1) * SLOTS_PER_DAY):
                # Trips start and end at 12:00 UTC (early morning in the US), when laptops sleep.
                travelling = trip is not None and (trip[1] * SLOTS_PER_DAY + 144 <= slot
                                                   < (trip[1] + trip[2]) * SLOTS_PER_DAY + 144)
                h_all, wd_all, _ = _clock(trip[0].city.timezone if travelling and trip else
                                          device.claimed.timezone, self.days)
                h, wd = h_all[slot], wd_all[slot]
                if device.schedule == "night-owl":
                    awake = wd < 5 and (h >= 13 or h < 1)
                else:
                    awake = (wd < 5 and start_h <= h < end_h) or (evening and 20 <= h < 22) or \
                            (wd >= 5 and weekend_use and 10 <= h < 12.5)
                state = "local"
                if day in device.own_desktop_days and 19 <= h < 21:
                    awake, state = True, "own-desktop"
                if day in device.helpdesk_days and 11 <= h < 11.25:
                    awake, state = True, "helpdesk"
                if not awake:
                    continue
                where = device.home
                if travelling and trip:
                    where = trip[0]
                elif device.other_place and wd in device.other_place[1] and 9 <= h < 17:
                    where = device.other_place[0]
                active = rng.random() < 0.75 or state != "local"
                plan.append((slot, (where, bool(active), state)))
        return plan

    def _farm_plan(self, device: Device, rng: np.random.Generator, hours: np.ndarray,
                   weekdays: np.ndarray) -> list[tuple[int, tuple[Network, bool, str]]]:
        if device.schedule == "operator-asia":
            op_hours, op_days, _ = _clock(OPERATOR_TZ, self.days)
        else:
            op_hours, op_days = hours, weekdays
        plan = []
        for slot in range(self.days * SLOTS_PER_DAY):
            working = op_days[slot] < 5 and 9 <= op_hours[slot] < 18
            if not (device.always_on or working or (op_days[slot] < 5 and 8 <= op_hours[slot] < 19)):
                continue
            controlled = working and rng.random() < 0.85
            plan.append((slot, (device.home, bool(controlled), "remote" if controlled else "idle")))
        return plan

    # -- one report ---------------------------------------------------------------------------------
    def _record(self, device: Device, slot: int, seq: int, where: Network, active: bool, state: str,
                boot: str, rng: np.random.Generator) -> dict[str, Any]:
        corporate = where.network_kind == "corporate" or where.corporate_vpn
        host_tz = where.city.timezone if device.trip and where is device.trip[0] else device.timezone
        _, _, offsets = _clock(host_tz, self.days)
        geo = ({"country": "US", "asn": 64500, "asn_org": "Example Corp", "network_kind": "corporate"} if corporate
               else {"country": where.city.country, "asn": where.asn, "asn_org": where.asn_org,
                     "network_kind": where.network_kind})
        interfaces = [{"name": "Wi-Fi", "kind": "wifi", "vpn_product": None}]
        if where.corporate_vpn:
            interfaces.append({"name": "PANGP", "kind": "vpn", "vpn_product": "globalprotect"})
        if device.vpn_product:
            interfaces.append({"name": "wg0", "kind": "vpn", "vpn_product": device.vpn_product})
        report = {
            "schema": "farmwatch.report/v1",
            "device_id": device.device_id,
            "seq": seq,
            "window_start": self.start_stamps[slot],
            "window_end": self.end_stamps[slot],
            "agent": {"version": "0.1.0", "os": device.os, "os_version": "10.0.22631",
                      "hostname": device.device_id[4:]},
            "host": {"timezone": host_tz, "utc_offset_minutes": offsets[slot // SLOTS_PER_DAY], "locale": "en_US",
                     "keyboard_layouts": device.layouts, "input_methods": device.input_methods, "boot_time": boot,
                     "users": [{"name": device.employee_id.lower(), "terminal": "console", "remote_host": None}]},
            "remote_access": self._tools(device, state, rng),
            "sessions": self._sessions(device, state, rng),
            "network": {
                "interfaces": interfaces, "gateway_ip": where.gateway_ip, "gateway_mac_hash": where.gateway_mac_hash,
                "wifi_bssid_hash": where.wifi_bssid_hash, "lan_neighbors": where.lan_neighbors,
                "probes": self._probes(where, slot, rng),
            },
            "input": self._input(device, active, state, rng),
            "hardware": self._hardware(device),
            "errors": [],
        }
        source = f"198.51.100.{10 + int(device.device_id[4:8], 16) % 200}" if where.corporate_vpn else \
            where.egress_at(slot)
        return {"received_at": self.end_stamps[slot], "source_ip": source, "geo": geo, "report": report}

    def _tools(self, device: Device, state: str, rng: np.random.Generator) -> list[dict[str, Any]]:
        if state == "helpdesk":
            return [_tool("teamviewer", "TeamViewer.exe", [_conn("52.9.12.40", 5938, "outbound", 31.0)])]
        if state == "own-desktop":
            return [_tool("chrome-remote-desktop", "remoting_host.exe", [_conn("24.5.77.3", 443, "outbound", 12.0)])]
        if device.tool is None:
            return []
        relay = _conn("104.18.9.77", RELAY_PORTS[device.tool], "outbound", float(rng.uniform(8, 35)))
        if state != "remote":
            return [_tool(device.tool, RMM_TOOLS[device.tool], [relay])]  # idle: registered with the relay
        if device.path == "direct":
            rtt = device.operator_rtt_ms + float(rng.uniform(0, 6))
            return [_tool(device.tool, RMM_TOOLS[device.tool],
                          [relay, _conn(device.operator_ip, 7070, "inbound", rtt)])]
        return [_tool(device.tool, RMM_TOOLS[device.tool], [relay])]

    def _sessions(self, device: Device, state: str, rng: np.random.Generator) -> list[dict[str, Any]]:
        if device.path != "rdp-vpn" or state != "remote":
            return []
        rtt = device.operator_rtt_ms + float(rng.uniform(0, 6))
        return [{"kind": "rdp", "user": device.employee_id.lower(), "remote_ip": "10.8.0.2",
                 "rtt_ms": rtt + 12.0, "min_rtt_ms": rtt}]

    def _probes(self, where: Network, slot: int, rng: np.random.Generator) -> list[dict[str, Any]]:
        probes = []
        for k in range(3):  # three of the anchors per report, rotating
            name, address, _, lat, lon = ANCHORS[(slot + k) % len(ANCHORS)]
            base = self._base_rtt(where, name, (lat, lon), rng)
            low = base + float(rng.uniform(0, 1.5))
            probes.append({"target": name, "address": address, "method": "tcp", "sent": 3, "received": 3,
                           "rtt_min_ms": round(low, 2), "rtt_median_ms": round(low * 1.08 + 1, 2),
                           "rtt_max_ms": round(low * 1.5 + 4, 2)})
        return probes

    def _base_rtt(self, where: Network, anchor: str, at: tuple[float, float], rng: np.random.Generator) -> float:
        key = (where.name, anchor)
        if key not in self._rtt:
            here = (where.city.latitude, where.city.longitude)
            if where.corporate_vpn:  # hairpin through the VPN hub: RTT only grows
                self._rtt[key] = path_rtt_ms(rng, distance_km(here, VPN_CONCENTRATOR)) + \
                    path_rtt_ms(rng, distance_km(VPN_CONCENTRATOR, at))
            else:
                self._rtt[key] = path_rtt_ms(rng, distance_km(here, at) + 30.0)  # homes ~30 km from centre
        return self._rtt[key]

    def _input(self, device: Device, active: bool, state: str, rng: np.random.Generator) -> dict[str, Any]:
        if not active:
            return _timing(0, int(rng.integers(0, 20)), 0, rng.uniform(0, 10), None)
        keys, mouse = int(rng.integers(120, 700)), int(rng.integers(1500, 12000))
        if state == "remote":
            stats = _local_stats(device, rng) if rng.random() < device.local_like else _remote_stats(rng)
            injected = 0 if device.path in ("rdp-vpn", "ipkvm") else int((keys + mouse) * rng.uniform(0.9, 1.0))
            if device.paste_share and rng.random() < device.paste_share:
                return _pasted(keys, mouse, rng)
            timing = _timing(keys, mouse, injected, rng.uniform(120, 290), stats)
            if device.path == "rdp-vpn" and device.os == "linux":
                timing["virtual_devices"] = ["xrdpMouse", "xrdpKeyboard"]
            return timing
        if device.paste_share and rng.random() < device.paste_share:  # a keyboard's own macro, typed at its pace
            return _pasted(keys, mouse, rng)
        stats = _local_stats(device, rng)
        injected = int(rng.integers(20, 200)) if (device.macro_share and rng.random() < device.macro_share) else 0
        if state == "helpdesk":
            injected, stats = keys + mouse, _remote_stats(rng)
        return _timing(keys, mouse, injected, rng.uniform(80, 290), stats)

    def _hardware(self, device: Device) -> dict[str, Any]:
        usb = [{"vendor_id": "8087", "product_id": "0026", "manufacturer": "Intel Corp.",
                "product": "AX201 Bluetooth", "interface_classes": ["wireless"]}]
        displays = [] if device.docked or device.kvm else [{"name": "eDP-1 panel", "manufacturer": "BOE",
                                                             "serial_hash": None}]
        if device.docked:
            displays.append({"name": "DELL U2720Q", "manufacturer": "DEL", "serial_hash": None})
            if device.kind == "desk-kvm":  # ATEN (USB vendor 0557, usb.ids) desk KVM switch; product illustrative
                usb.append({"vendor_id": "0557", "product_id": "2419", "manufacturer": "ATEN",
                            "product": "CS1924 KVM Switch", "interface_classes": ["hid", "hub"]})
        if device.kvm:
            vid, pid, manufacturer, product, edid = device.kvm
            usb.append({"vendor_id": vid, "product_id": pid, "manufacturer": manufacturer, "product": product,
                        "interface_classes": ["hid", "mass_storage"] if vid == "1d6b" else ["hid"]})
            displays.append({"name": edid, "manufacturer": None, "serial_hash": None})
        return {"usb": usb, "displays": displays}


def _tool(tool: str, process: str, connections: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tool": tool, "process": process, "pid": 4100, "started_at": None, "listening": [],
            "connections": connections}


def _conn(ip: str, port: int, direction: str, min_rtt: float) -> dict[str, Any]:
    return {"remote_ip": ip, "remote_port": port, "local_port": 50123, "state": "ESTABLISHED",
            "direction": direction, "rtt_ms": round(min_rtt * 1.1, 2), "min_rtt_ms": round(min_rtt, 2)}


def _local_stats(device: Device, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """(key p10 ms, burst fraction, mouse rate Hz, jump fraction) of hands on this keyboard; now and
    then one feature strays (a game, key chords), which is why detectors count windows."""
    p10 = max(20.0, rng.normal(device.key_p10, 10))
    burst = abs(rng.normal(0.01, 0.006))
    rate = max(20.0, rng.normal(device.mouse_rate, 8))
    jump = abs(rng.normal(0.002, 0.0012))
    stray = rng.random()
    if stray < 0.02:  # key chords and games bunch keys; a laggy Bluetooth mouse reports slowly
        burst = rng.uniform(0.06, 0.12)
    elif stray < 0.04:
        rate = rng.uniform(30, 45)
    elif stray < 0.05:  # both at once: a window that looks remote although hands are on the keys
        burst, rate = rng.uniform(0.06, 0.12), rng.uniform(30, 45)
    return p10, burst, rate, jump


def _remote_stats(rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Input through a remote-control pipe; a minority of windows look nearly local."""
    if rng.random() < 0.15:
        return rng.uniform(15, 60), rng.uniform(0.02, 0.07), rng.uniform(35, 70), rng.uniform(0.005, 0.02)
    return rng.uniform(0.8, 10), rng.uniform(0.07, 0.25), rng.uniform(12, 40), rng.uniform(0.015, 0.06)


def _pasted(keys: int, mouse: int, rng: np.random.Generator) -> dict[str, Any]:
    """An IP-KVM typing text pasted into its web page ("paste as keys"): every key at the gadget's
    fixed pace, so the intervals barely spread (PiKVM and TinyPilot type pasted text key by key), and
    the events come from hardware, so nothing is marked injected."""
    pace = float(rng.uniform(15, 40))
    timing = _timing(keys, mouse, 0, rng.uniform(60, 200), (pace, 0.0, float(rng.uniform(12, 40)), 0.02))
    timing.update(key_interval_ms_p50=round(pace * 1.05, 2), key_interval_ms_p90=round(pace * 1.2, 2))
    return timing


def _timing(keys: int, mouse: int, injected: int, active: float,
            stats: tuple[float, float, float, float] | None) -> dict[str, Any]:
    p10, burst, rate, jump = stats if stats and keys else (None, None, None, None)
    return {
        "seconds_observed": 300.0, "active_seconds": round(float(active), 1), "key_events": keys,
        "mouse_events": mouse, "injected_events": injected, "virtual_devices": [],
        "key_interval_ms_p10": None if p10 is None else round(float(p10), 2),
        "key_interval_ms_p50": None if p10 is None else round(float(p10) * 2.3 + 20, 2),
        "key_interval_ms_p90": None if p10 is None else round(float(p10) * 7 + 60, 2),
        "key_burst_fraction": None if burst is None else round(float(burst), 4),
        "mouse_rate_hz_median": None if rate is None else round(float(rate), 2),
        "mouse_jump_fraction": None if jump is None else round(float(jump), 4),
    }
