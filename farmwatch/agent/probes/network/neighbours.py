"""The local network: default gateway and the neighbour (ARP) table, from /proc/net.

Why security cares: laptops of several employees behind one gateway MAC is the decisive fleet
signal of a farm, and a crowded LAN is another hint. The gateway MAC leaves the laptop only as a
salted hash. ``/proc/net/route`` lists IPv4 routes with addresses as the kernel's raw 32-bit
value printed in hex (host byte order); ``/proc/net/arp`` is the IPv4 neighbour table
(net/ipv4/arp.c: flag 0x2 ATF_COM marks a resolved entry). IPv6 neighbours are not counted.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

_RTF_UP = 0x1
_RTF_GATEWAY = 0x2
_ATF_COM = 0x2
_NO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class Gateway:
    """The default route's next hop."""

    ip: str
    interface: str


@dataclass(frozen=True)
class Neighbour:
    """One resolved entry of the neighbour table."""

    ip: str
    mac: str  # lower case, colon separated
    interface: str


def default_gateway(proc_root: Path) -> Gateway | None:
    """The IPv4 default gateway with the lowest metric, or None without a default route."""
    best: tuple[int, Gateway] | None = None
    for fields in _table(proc_root / "net" / "route"):
        iface, destination, gateway, flags, metric = fields[0], fields[1], fields[2], int(fields[3], 16), int(fields[6])
        if destination != "00000000" or flags & (_RTF_UP | _RTF_GATEWAY) != _RTF_UP | _RTF_GATEWAY:
            continue
        candidate = Gateway(ip=socket.inet_ntoa(struct.pack("=I", int(gateway, 16))), interface=iface)
        if best is None or metric < best[0]:
            best = (metric, candidate)
    return best[1] if best else None


def neighbours(proc_root: Path) -> list[Neighbour]:
    """Resolved IPv4 neighbours (incomplete and all-zero entries left out)."""
    found = []
    for fields in _table(proc_root / "net" / "arp"):
        ip, flags, mac, iface = fields[0], int(fields[2], 16), fields[3].lower(), fields[5]
        if flags & _ATF_COM and mac != _NO_MAC:
            found.append(Neighbour(ip=ip, mac=mac, interface=iface))
    return found


def gateway_mac(gateway: Gateway, table: list[Neighbour]) -> str | None:
    """The gateway's MAC from the neighbour table (absent until traffic resolved it)."""
    return next((n.mac for n in table if n.ip == gateway.ip and n.interface == gateway.interface), None)


def _table(path: Path) -> list[list[str]]:
    """Rows of a whitespace-separated /proc table, header skipped."""
    return [line.split() for line in path.read_text().splitlines()[1:] if line.strip()]
