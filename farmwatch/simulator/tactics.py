"""Tactics farms move to once remote-access tools get caught, and the confounders each one meets (issue 16).

Each tactic rewrites some devices of a fleet from ``make_fleet`` in place, with its own random
stream (the rest of the fleet stays the one the seed makes), and appends ``/<tactic>`` to the kind of
every device it touched, so labels.csv says which ones. What farmwatch can and cannot see of each:
docs/tactics.md. Shares and durations are illustrative (no public base rates).

- ``tampering``: farm operators stop the agent for hours while they work (the laptop stays up),
  reinstall it, or put its state dir back from a backup (a restarted sequence). Confounders: IT
  reimages a few employees' laptops (a new boot and a re-enrolment), an agent upgrade restarts the
  service for a few minutes, a full disk kept an agent's counter from being saved (a few refused seqs).
- ``vps-hop``: operators of direct RMM and RDP sessions hop through a rented VPS in the hiring
  country, so the laptop's peer is a few ms away; their typing still crosses the far hop.
- ``kvm-reflashed``: IP-KVMs re-flashed to look like a generic Logitech keyboard, the laptop's
  display either an HDMI capture dongle with its usual EDID ("HDMI TO USB") or one re-flashed to an
  ordinary monitor's name; part of the operator's typing is pasted text typed at the gadget's fixed
  pace. Confounder: employees whose programmable keyboard now and then types a macro at a fixed pace.
- ``in-city``: the facilitator keeps every laptop in the city its employee claims (the roster says
  the farm's town), so geolocation, anchors and time zone agree with HR.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from farmwatch.simulator.fleet import Device

SLOTS_PER_DAY = 288
VPS_PEERS = ("45.79.112.9", "172.105.4.20", "139.144.8.66")
"""Rented VPSs in the US (Akamai/Linode address space, registry: ARIN): where the hop sits."""
GENERIC_KEYBOARD = ("046d", "c31c", "Logitech", "USB Keyboard")
CAPTURE_DONGLE_EDID = "HDMI TO USB"  # a MacroSilicon MS21xx capture dongle's EDID name (detectors/data/ipkvm.csv)
REFLASHED_EDID = "DELL S2421HN"  # the monitor EDID sandbox-pokhara/ms21xx-firmware's README re-flashes one to


def _operator_hour(device: Device, rng: np.random.Generator) -> int:
    """A UTC hour inside the operator's working day (Pyongyang 09-18 is 00-09 UTC)."""
    return int(rng.integers(0, 7)) if device.schedule == "operator-asia" else int(rng.integers(14, 20))


def tampering(devices: list[Device], rng: np.random.Generator, days: int) -> None:
    for device in devices:
        touched = False
        if device.label == "farm":
            if rng.random() < 0.6:  # stopped while working, 1-3 times, 1-4 h each
                stops = []
                for day in sorted({int(rng.integers(0, days)) for _ in range(int(rng.integers(1, 4)))}):
                    first = day * SLOTS_PER_DAY + _operator_hour(device, rng) * 12
                    stops.append((first, first + int(rng.integers(12, 49))))
                device.agent_stops, touched = tuple(stops), True
            if rng.random() < 0.3 and days > 1:
                device.seq_reset_day, touched = int(rng.integers(1, days)), True  # reinstalled
            if rng.random() < 0.2:
                device.seq_conflicts = (int(rng.integers(SLOTS_PER_DAY, days * SLOTS_PER_DAY)),
                                        int(rng.integers(5, 60)))  # state dir put back from a backup
                touched = True
        else:
            draw = rng.random()
            if draw < 0.08 and days > 1:  # reimaged by IT one morning
                device.reenrol_slot = int(rng.integers(1, days)) * SLOTS_PER_DAY + 13 * 12
                touched = True
            elif draw < 0.13:  # a full disk lost the agent's counter: a few seqs refused
                device.seq_conflicts = (int(rng.integers(0, days * SLOTS_PER_DAY)), int(rng.integers(1, 4)))
                touched = True
            if rng.random() < 0.3:  # an agent upgrade restarts the service: one window missing
                device.agent_restarts, touched = 1, True
        if touched:
            device.kind += "/tampering"


def vps_hop(devices: list[Device], rng: np.random.Generator, days: int) -> None:
    for device in devices:
        if device.label == "farm" and device.path in ("direct", "rdp-vpn"):
            device.operator_ip = str(rng.choice(VPS_PEERS))
            device.operator_rtt_ms = float(rng.uniform(6, 30))  # the laptop sees only the near hop
            device.kind += "/vps-hop"


def kvm_reflashed(devices: list[Device], rng: np.random.Generator, days: int) -> None:
    for device in devices:
        if device.label == "farm" and device.path == "ipkvm":
            edid = CAPTURE_DONGLE_EDID if rng.random() < 0.5 else REFLASHED_EDID
            device.kvm = (*GENERIC_KEYBOARD, edid)
            device.paste_share = float(rng.uniform(0.2, 0.5))
            device.kind += "/kvm-reflashed"
        elif device.label == "legit" and device.kind.startswith("plain") and rng.random() < 0.1:
            device.paste_share = float(rng.uniform(0.01, 0.06))  # a programmable keyboard's macros
            device.kind += "/keyboard-macros"


def in_city(devices: list[Device], rng: np.random.Generator, days: int) -> None:
    for device in devices:
        if device.label == "farm":
            moved_clock = device.timezone != device.claimed.timezone  # the operator set their own zone
            device.claimed = device.home.city
            if not moved_clock:
                device.timezone = device.claimed.timezone
            device.kind += "/in-city"


TACTICS: dict[str, Callable[[list[Device], np.random.Generator, int], None]] = {
    "tampering": tampering,
    "vps-hop": vps_hop,
    "kvm-reflashed": kvm_reflashed,
    "in-city": in_city,
}


def apply_tactic(devices: list[Device], name: str, seed: int, days: int) -> None:
    """Apply tactic ``name`` (a key of :data:`TACTICS`) to ``devices`` in place."""
    TACTICS[name](devices, np.random.default_rng([seed, 16, sorted(TACTICS).index(name)]), days)
