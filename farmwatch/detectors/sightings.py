"""Which network identities a reduced window was seen on, and in which hour: the rows of the collector's
``sightings`` table, so the devices a co-location cluster can include are found without reading records.

A superset of what :class:`~farmwatch.detectors.signals.colocation.ColocationDetector` links on: the
same identities (egress address, gateway MAC hash, Wi-Fi BSSID hash) in the same window-end hour,
leaving out only what it never links on whatever the configuration: egress of networks strangers
share, and every identity of a window that left through a ``corporate`` network (co-location skips
those windows whole: colleagues in an office are not a farm). Company ranges from the collector's
config are not known here and stay in: a superset costs a larger neighbourhood, never a missed link.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from farmwatch.detectors.frame import WINDOW_LAYOUT, Window
from farmwatch.detectors.signals.colocation import SHARED_ADDRESS_SPACE, SHARED_BY_STRANGERS

_AT = {name: WINDOW_LAYOUT["reports"].index(name) for name in (
    "window_end", "source_ip", "gateway_ip", "network_kind", "gateway_mac_hash", "wifi_bssid_hash")}


def _in_shared_space(text: Any) -> bool:
    try:
        return isinstance(text, str) and ipaddress.ip_address(text) in SHARED_ADDRESS_SPACE
    except ValueError:
        return False


def window_sightings(window: Window) -> list[tuple[str, str, int]]:
    """``(kind, identity, hour)`` for each network identity ``window`` reports (hour: whole hours
    since the epoch of its window end, as :class:`~farmwatch.detectors.frame.Frames` counts them)."""
    row = window.row
    if row[_AT["network_kind"]] == "corporate":
        return []
    hour = int(datetime.fromisoformat(str(row[_AT["window_end"]]).replace("Z", "+00:00")).timestamp() // 3600)
    seen = []
    source, gateway_ip = row[_AT["source_ip"]], row[_AT["gateway_ip"]]
    if source and row[_AT["network_kind"]] not in SHARED_BY_STRANGERS and not (
            _in_shared_space(source) or _in_shared_space(gateway_ip)):
        seen.append(("egress_ip", str(source), hour))
    for kind, column in (("gateway_mac", "gateway_mac_hash"), ("wifi_bssid", "wifi_bssid_hash")):
        if row[_AT[column]]:
            seen.append((kind, str(row[_AT[column]]), hour))
    return seen
