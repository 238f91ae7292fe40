"""An active ARP sweep of the laptop's own LAN segments (optional; scapy and CAP_NET_RAW).

The passive neighbour table holds only hosts the laptop talked to lately; a sweep asks every
address of each directly attached IPv4 subnet "who has?" and counts who answers. It is off by
default (``probe_options.network.arp_sweep``): it is noisy on the LAN and needs raw sockets.
Only subnets of /24 or smaller are swept, so a misconfigured /8 cannot flood a network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

_SMALLEST_PREFIX = 24


def sweep(interfaces: Iterable[str], timeout_s: float = 1.0) -> set[str]:
    """MAC addresses (lower case) that answered ARP requests on ``interfaces``' IPv4 subnets."""
    import psutil
    from scapy.layers.l2 import ARP, Ether
    from scapy.sendrecv import srp

    wanted = set(interfaces)
    answered: set[str] = set()
    for name, addresses in psutil.net_if_addrs().items():
        if name not in wanted:
            continue
        for address in addresses:
            if address.family != socket.AF_INET or not address.netmask:
                continue
            subnet = ipaddress.ip_network(f"{address.address}/{address.netmask}", strict=False)
            if subnet.prefixlen < _SMALLEST_PREFIX:
                continue
            replies, _ = srp(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=str(subnet)), iface=name,
                             timeout=timeout_s, verbose=False)
            answered |= {reply.hwsrc.lower() for _, reply in replies}
    return answered
