"""What kind of link each network interface is, read from sysfs (``/sys/class/net``).

Why security cares: a VPN interface hides the route to the operator; Wi-Fi versus ethernet says
what kind of place the laptop sits in. sysfs says it without privileges: ``type`` is the ARPHRD
link type (include/uapi/linux/if_arp.h), ``wireless``/``phy80211`` mark 802.11 devices,
``tun_flags`` marks TUN/TAP devices (drivers/net/tun.c), ``uevent`` carries DEVTYPE (bridge,
wireguard, wlan, wwan ...), and only devices backed by hardware have a ``device`` link.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kind = Literal["ethernet", "wifi", "vpn", "virtual", "loopback", "other"]

_ARPHRD_ETHER = 1
_ARPHRD_LOOPBACK = 772
# Point-to-point and tunnel link types that carry a VPN or an IP-in-IP tunnel:
# PPP 512, IPIP 768, TUNNEL6 769, SIT 776, IPGRE 778, NONE 65534 (TUN, WireGuard).
_TUNNEL_TYPES = {512, 768, 769, 776, 778, 65534}
_VPN_DEVTYPES = {"wireguard", "ppp"}
# Names the common VPN stacks give their devices whatever the product (tun/tap, PPP, macOS utun,
# IPsec VTI/xfrm, WireGuard): enough to call it a VPN on systems without sysfs details.
VPN_NAME_PREFIXES = ("tun", "tap", "ppp", "utun", "ipsec", "wg", "xfrm", "vti")


@dataclass(frozen=True)
class LinkFacts:
    """One interface as sysfs describes it."""

    name: str
    kind: Kind
    driver: str | None  # hardware driver name, or the uevent DEVTYPE / "tun" for virtual devices


def read_interfaces(sys_root: Path) -> list[LinkFacts]:
    """Every interface under ``<sys_root>/class/net``, sorted by name."""
    base = sys_root / "class" / "net"
    return [describe(entry) for entry in sorted(base.iterdir(), key=lambda p: p.name)]


def describe(path: Path) -> LinkFacts:
    """The kind and driver of the interface whose sysfs directory is ``path``."""
    name = path.name
    link_type = _read_int(path / "type")
    devtype = _uevent(path).get("DEVTYPE")
    hardware = (path / "device").exists()
    driver = _driver(path) if hardware else devtype
    if (path / "tun_flags").exists():
        driver = "tun"
    kind: Kind
    if link_type == _ARPHRD_LOOPBACK:
        kind = "loopback"
    elif (path / "wireless").exists() or (path / "phy80211").exists() or devtype == "wlan":
        kind = "wifi"
    elif hardware:
        # Plain ethernet has no DEVTYPE; wwan modems, infiniband, CAN ... are "other".
        kind = "ethernet" if link_type == _ARPHRD_ETHER and devtype is None else "other"
    elif driver == "tun" or devtype in _VPN_DEVTYPES or link_type in _TUNNEL_TYPES:
        kind = "vpn"
    elif name.startswith(VPN_NAME_PREFIXES):
        kind = "vpn"
    else:
        kind = "virtual"  # veth, bridge, docker0, virbr, bond, vlan, dummy, ifb ...
    return LinkFacts(name=name, kind=kind, driver=driver)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _uevent(path: Path) -> dict[str, str]:
    try:
        lines = (path / "uevent").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _driver(path: Path) -> str | None:
    """The hardware driver's name: sysfs links device/driver to /sys/bus/*/drivers/<name>."""
    driver = path / "device" / "driver"
    return driver.readlink().name if driver.is_symlink() else None
