"""IP-KVM hardware on the USB bus or behind the display (ATT&CK T1200, T1219.003).

Farms moved to IP-KVMs (PiKVM, TinyPilot, JetKVM, NanoKVM) to evade RMM detection: the device
types and moves the mouse as a USB gadget and captures the screen over HDMI. Identities come from
``data/ipkvm.csv`` (each vendor's own source, cited there). A default identity is strong evidence;
the generic Linux composite gadget id is weaker (benign gadgets use it); a laptop whose only display
is an external one (lid closed) is weak alone and left to compound with input behaviour in the
risk combiner. Desk KVM switches show ordinary vendor ids and are not flagged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector
from farmwatch.detectors.frame import Frames

# Internal laptop panels as the display probe names them (EDID-less eDP/LVDS, Apple "Color LCD").
INTERNAL_PANEL_MARKS = ("edp", "lvds", "dsi", "color lcd", "built-in", "internal")


@dataclass(frozen=True)
class Identity:
    kind: str
    device: str
    vendor_id: str
    product_id: str
    manufacturer: str
    product: str
    source: str


@lru_cache(maxsize=1)
def catalogue() -> tuple[Identity, ...]:
    """The IP-KVM identities shipped in ``farmwatch/detectors/data/ipkvm.csv``."""
    text = (files("farmwatch.detectors") / "data" / "ipkvm.csv").read_text(encoding="utf-8")
    rows = csv.reader(line for line in text.splitlines() if line and not line.startswith("#"))
    return tuple(Identity(*row) for row in rows)


def _same(a: object, b: str) -> bool:
    return isinstance(a, str) and a.strip().lower() == b.lower()


def usb_identity(vendor_id: str, product_id: str, manufacturer: object, product: object) -> Identity | None:
    """The catalogue entry a USB device matches: an IP-KVM's default identity (kind "usb") first, else
    the generic Linux gadget id (kind "gadget_generic"); None for anything else."""
    for identity in catalogue():
        if identity.kind == "usb" and (vendor_id, product_id) == (identity.vendor_id, identity.product_id) and (
            _same(manufacturer, identity.manufacturer) or _same(product, identity.product)
        ):
            return identity
    for identity in catalogue():
        if identity.kind == "gadget_generic" and (vendor_id, product_id) == (identity.vendor_id, identity.product_id):
            return identity
    return None


def display_identity(name: object) -> Identity | None:
    """The IP-KVM whose HDMI capture announces itself with this EDID display name, if any."""
    for identity in catalogue():
        if identity.kind == "edid" and isinstance(name, str) and identity.product.lower() in name.lower():
            return identity
    return None


class IpKvmDetector(Detector):
    """Known IP-KVM USB identities and EDID names, generic gadgets, external-only displays."""

    name = "ipkvm"
    group = "hardware"
    attack = "T1200"

    def __init__(self, known_score: float = 0.9, generic_score: float = 0.35, external_only_score: float = 0.1,
                 min_reports: int = 2) -> None:
        self.known_score = known_score
        self.generic_score = generic_score
        self.external_only_score = external_only_score
        self.min_reports = min_reports

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        hits: dict[str, list[tuple[float, str, dict[str, object], int, int]]] = {}
        for row in frames.usb.itertuples(index=False):
            usb = self._usb(row)
            if usb is not None:
                hits.setdefault(row.device_id, []).append((*usb, row.first_rec, row.last_rec))
        by_device: dict[str, list[Any]] = {}  # plain rows: a device has a few displays, pandas per device costs more
        for row in frames.displays.itertuples(index=False):
            by_device.setdefault(str(row.device_id), []).append(row)
        for device, rows in by_device.items():
            display = self._displays(rows)
            if display is not None:
                hits.setdefault(str(device), []).append(display)
        times = frames.reports["window_end"]
        found = []
        for device in sorted(hits):
            best = max(hits[device], key=lambda hit: hit[0])
            score, summary, evidence, first, last = best
            evidence = {**evidence, "other_hits": [h[1] for h in hits[device] if h is not best]}
            found.append(self.finding(device, score, summary, evidence, times.iloc[first], times.iloc[last],
                                      attack="T1219.003" if score >= self.known_score else self.attack))
        return found

    def _usb(self, row: object) -> tuple[float, str, dict[str, object]] | None:
        vid, pid = getattr(row, "vendor_id"), getattr(row, "product_id")
        manufacturer, product = getattr(row, "manufacturer"), getattr(row, "product")
        evidence = {"vendor_id": vid, "product_id": pid, "manufacturer": manufacturer, "product": product,
                    "reports": getattr(row, "reports")}
        identity = usb_identity(vid, pid, manufacturer, product)
        if identity is None:
            return None
        if identity.kind == "usb":
            return (self.known_score,
                    f"A {identity.device} (USB {vid}:{pid} \"{manufacturer}\" / \"{product}\", its vendor's "
                    f"default identity) is attached: an IP-KVM lets someone elsewhere type and see the screen.",
                    {**evidence, "device": identity.device, "source": identity.source})
        return (self.generic_score,
                f"A generic Linux USB gadget ({vid}:{pid} \"{manufacturer}\" / \"{product}\") is attached, "
                f"the identity IP-KVMs use when re-branded (benign gadgets use it too).",
                {**evidence, "device": "generic gadget", "source": identity.source})

    def _displays(self, rows: list[Any]) -> tuple[float, str, dict[str, object], int, int] | None:
        """``rows``: one device's display identities (``Frames.displays`` rows), in frame order."""
        for row in rows:
            identity = display_identity(row.name)
            if identity is not None:
                return (self.known_score,
                        f"The display \"{row.name}\" is the video capture of a {identity.device}: the screen "
                        f"is being watched through an IP-KVM.",
                        {"display": row.name, "device": identity.device, "source": identity.source,
                         "reports": row.reports}, row.first_rec, row.last_rec)
        names = [str(row.name).lower() for row in rows if not pd.isna(row.name)]
        internal = any(mark in name for name in names for mark in INTERNAL_PANEL_MARKS)
        if names and not internal and sum(row.reports for row in rows) >= self.min_reports:
            return (self.external_only_score,
                    "Only external displays were ever seen (the laptop runs with its lid closed).",
                    {"displays": sorted({row.name for row in rows if not pd.isna(row.name)})[:5]},
                    min(row.first_rec for row in rows), max(row.last_rec for row in rows))
        return None
