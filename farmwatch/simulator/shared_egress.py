"""The shared-egress variant (issue 16): strangers behind one public address, and farms behind one.

Carrier-grade NAT (RFC 6598) puts many subscribers of a carrier's 5G/mobile home internet or
satellite service behind a small pool of public addresses, each subscriber's mapping changing every
hour or few; a consumer VPN puts its users behind a few exit addresses per region, picked at each
connect. Employees of one company on the same carrier or VPN therefore share public addresses by
chance, hours at a time, with different partners each time, while each sits behind their own
router (their own gateway MAC and access point). Farms can sit behind the same services: their
laptops share one router, so their LAN identities agree and their egress moves together.

``apply_shared_egress`` rewrites some devices of a fleet from ``make_fleet`` in place, with its own
random stream, so the rest of the fleet is the one ``make_fleet`` makes for the seed. Converted
devices' kinds gain a suffix ("plain/cgnat-mobile", "rmm-relay/behind-5g"), so labels.csv says which
ones the variant touched. Shares and pool sizes are illustrative (no public base rates): dense
enough that the chance co-location shows up in a fleet of a few hundred.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from farmwatch.simulator.fleet import Device, Network
from farmwatch.simulator.places import salted_hash

# (suffix, network_kind the collector gives, ASN, organisation, gateway the laptop sees, hours a
# mapping holds, pool per region?) The kinds are what farmwatch/collector/data/network_kinds.csv
# makes of these ASNs (T-Mobile: "mobile", Starlink: "cgnat"); the regional fixed-wireless ISP is
# not catalogued, so the collector says "unknown" and only the LAN identities and churn can tell.
# 192.168.12.1 is the T-Mobile Home Internet gateway's LAN address; behind Starlink's router in
# bypass mode the laptop's gateway is the customer router.
CARRIERS = (
    ("cgnat-mobile", "mobile", 21928, "T-Mobile USA, Inc.", "192.168.12.1", 2, True),
    ("cgnat-satellite", "cgnat", 14593, "Space Exploration Technologies Corporation", "192.168.1.1", 3, False),
    ("cgnat-fixed-wireless", "unknown", 64600, "Regional fixed wireless ISP", "192.168.0.1", 1, False),
)
CONSUMER_VPN = ("consumer-vpn", "vpn", 64700, "Consumer VPN exits", 24)
POOL_SIZE = 3  # public addresses per pool: small, so that subscribers collide
CGNAT_SHARE, VPN_SHARE = 0.45, 0.22  # of the "plain" employees
NO_LAN_IDENTITY_SHARE = 0.2  # converted homes whose agent reports no gateway MAC or BSSID


def _region(timezone: str) -> str:
    return "west" if timezone in ("America/Denver", "America/Phoenix", "America/Los_Angeles") else "east"


def apply_shared_egress(devices: list[Device], seed: int) -> None:
    """Move some legitimate employees behind CGNAT or a consumer VPN, and some farms behind 5G home
    internet or an agent without LAN identities (see the module docstring)."""
    rng = np.random.default_rng([seed, 6598])
    pools: dict[tuple[str, str], tuple[str, ...]] = {}

    def pool(name: str, region: str, first_octet: int) -> tuple[str, ...]:
        key = (name, region)
        if key not in pools:
            third = len(pools) + 1
            pools[key] = tuple(f"{first_octet}.{60 + third}.{third}.{10 + k}" for k in range(POOL_SIZE))
        return pools[key]

    def carrier_network(device: Device, carrier: tuple[str, str, int, str, str, int, bool], shared_name: str,
                        lan: bool) -> Network:
        suffix, kind, asn, org, gateway, hold, regional = carrier
        region = _region(device.home.city.timezone) if regional else "all"
        return replace(device.home, name=shared_name, network_kind=kind, asn=asn, asn_org=org, gateway_ip=gateway,
                       egress_pool=pool(suffix, region, 172), egress_hold_hours=hold,
                       gateway_mac_hash=salted_hash(seed, f"{shared_name}-gw") if lan else None,
                       wifi_bssid_hash=salted_hash(seed, f"{shared_name}-ap") if lan else None)

    for device in devices:
        if device.label != "legit" or device.kind != "plain":
            continue
        draw = rng.random()
        lan = rng.random() >= NO_LAN_IDENTITY_SHARE
        if draw < CGNAT_SHARE:
            carrier = CARRIERS[int(rng.choice(len(CARRIERS), p=[0.4, 0.2, 0.4]))]
            device.home = carrier_network(device, carrier, f"{device.device_id}-home", lan)
            device.kind += "/" + carrier[0]
        elif draw < CGNAT_SHARE + VPN_SHARE:
            suffix, kind, asn, org, hold = CONSUMER_VPN
            region = _region(device.home.city.timezone)
            device.home = replace(device.home, name=f"{device.device_id}-vpn", network_kind=kind, asn=asn,
                                  asn_org=org, egress_pool=pool(suffix, region, 185), egress_hold_hours=hold,
                                  gateway_mac_hash=device.home.gateway_mac_hash if lan else None,
                                  wifi_bssid_hash=device.home.wifi_bssid_hash if lan else None)
            device.vpn_product = "nordvpn"
            device.kind += "/" + suffix

    # Farms: every site with more than one laptop on one line moves with its laptops, together.
    sites: dict[str, list[Device]] = defaultdict(list)
    for device in devices:
        if device.label == "farm" and "own-line" not in device.kind:
            sites[device.home.name].append(device)
    shared_sites = [members for members in sites.values() if len(members) > 1]
    for number, members in enumerate(shared_sites):
        choice = number % 3  # behind 5G home internet; an agent without LAN identities; unchanged
        if choice == 2:
            continue
        if choice == 0:
            home = carrier_network(members[0], CARRIERS[0], f"farm-site-{number}", lan=True)
            suffix = "behind-5g"
        else:
            home = replace(members[0].home, gateway_mac_hash=None, wifi_bssid_hash=None)
            suffix = "no-lan-identity"
        for device in members:
            device.home = home
            device.kind += "/" + suffix
