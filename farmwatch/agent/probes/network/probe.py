"""The ``network`` section: interfaces and VPNs, the local network, and latency to anchors.

Reads ``/sys/class/net`` (interface kinds), the process table (VPN client processes, by name only;
the collection's one pass over ``/proc``, shared with the other probes),
``/proc/net/route`` and ``/proc/net/arp`` (gateway, neighbours), the OS's Wi-Fi tool (BSSID) and
times TCP connects to the anchors the collector configured. Why security cares: a VPN hides the
route to the operator; laptops of several employees behind one gateway or access point are a farm;
anchor latency bounds how far the laptop is from each anchor (light in fibre: RTT of r ms bounds
the distance to r x 100 km). Gateway MAC and BSSID leave only as salted SHA-256.

Options (``probe_options.network``): ``samples`` (default 5), ``timeout_seconds`` (2.0),
``method`` ("tcp" default, or "icmp": scapy + CAP_NET_RAW, else a problem and TCP is used),
``arp_sweep`` (false; scapy + CAP_NET_RAW: :mod:`farmwatch.agent.probes.network.arp_sweep` adds who answers
on each attached IPv4 /24 or smaller to the passive neighbour count).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Annotated, Literal

from pydantic import Field

from farmwatch.agent.probes.base import Probe, ProbeOptions
from farmwatch.agent.probes.salted import salted_sha256
from farmwatch.contract import Interface, LatencyProbe, NetworkFacts

from .anchor_latency import has_cap_net_raw, icmp_echo_rtt, measure_all, tcp_connect_rtt
from .arp_sweep import sweep
from .interfaces import VPN_NAME_PREFIXES, LinkFacts, read_interfaces
from .neighbours import default_gateway, gateway_mac, neighbours
from .vpn_catalog import load_catalog, product_of_interface, products_running
from .wifi import BssidUnavailable, current_bssid

_LAN_KINDS = ("ethernet", "wifi", "virtual")  # link layers that carry ARP (not TUN/PPP)


class NetworkOptions(ProbeOptions):
    samples: Annotated[int, Field(ge=1, le=50, strict=True)] = 5  # connects (or pings) per anchor
    timeout_seconds: Annotated[float, Field(ge=0.05, le=30.0, strict=True)] = 2.0
    method: Literal["tcp", "icmp"] = "tcp"
    arp_sweep: Annotated[bool, Field(strict=True)] = False


class NetworkProbe(Probe[NetworkFacts]):
    """Interfaces (kind, VPN product), gateway, Wi-Fi access point, neighbours, anchor latency."""

    name = "network"
    section = "network"

    def collect(self) -> NetworkFacts:
        self.options = self.read_options(NetworkOptions)
        linux = self.context.platform.startswith("linux")
        links = self._links() if linux else self._links_by_name()
        gateway_ip, gateway_hash, neighbour_count = self._local_network(links) if linux else (None, None, None)
        return NetworkFacts(
            interfaces=self._with_vpn_products(links),
            gateway_ip=gateway_ip,
            gateway_mac_hash=gateway_hash,
            wifi_bssid_hash=self._bssid_hash([link.name for link in links if link.kind == "wifi"]),
            lan_neighbors=neighbour_count,
            probes=self._anchor_probes(),
        )

    def _links(self) -> list[LinkFacts]:
        try:
            return read_interfaces(self.context.sys_root)
        except OSError as failure:
            self.problem(f"cannot list interfaces in {self.context.sys_root}/class/net: {failure}")
            return []

    def _links_by_name(self) -> list[LinkFacts]:
        """Outside Linux there is no sysfs: names only, kinds guessed from them (and said so)."""
        import psutil

        self.problem(f"interface kinds on {self.context.platform} are guessed from names; "
                     "gateway and neighbours are read on Linux only")
        links = []
        for name in sorted(psutil.net_if_stats()):
            kind = "loopback" if name.lower().startswith(("lo", "loopback")) else (
                "vpn" if name.lower().startswith(VPN_NAME_PREFIXES) else "other")
            links.append(LinkFacts(name=name, kind=kind, driver=None))  # type: ignore[arg-type]
        return links

    def _with_vpn_products(self, links: list[LinkFacts]) -> list[Interface]:
        """Name each VPN interface's product from its name or driver and the running clients.

        A running client outranks a generic name: ``wg0`` while ``mullvad-daemon`` runs is
        Mullvad's tunnel, and products on a plain ``tun0`` (ExpressVPN, OpenConnect) show only
        as a process. Clients whose own interface name already matched are not reused.
        """
        catalog = load_catalog()
        running = products_running(catalog, self._process_names())
        named = {link.name: product_of_interface(catalog, link.name, link.driver)
                 for link in links if link.kind == "vpn"}
        unclaimed = [product for product in running if product not in named.values()]
        result = []
        for link in links:
            product = named.get(link.name)
            if link.kind == "vpn" and product not in running and unclaimed:
                product = unclaimed[0]
            result.append(Interface(name=link.name, kind=link.kind, vpn_product=product.product if product else None))
        return result

    def _process_names(self) -> set[str]:
        if not self.context.platform.startswith("linux"):
            import psutil

            return {p.info["name"] for p in psutil.process_iter(["name"]) if p.info["name"]}
        return {row.comm for row in self.context.kernel.processes()}

    def _local_network(self, links: list[LinkFacts]) -> tuple[str | None, str | None, int | None]:
        proc = self.context.proc_root
        try:
            gateway = default_gateway(proc)
            table = neighbours(proc)
        except OSError as failure:
            self.problem(f"cannot read {proc}/net/route or {proc}/net/arp: {failure}")
            return None, None, None
        macs = {n.mac for n in table}
        if self.options.arp_sweep and self._raw_packets_possible("the ARP sweep"):
            macs |= sweep([link.name for link in links if link.kind in _LAN_KINDS])
        mac = gateway_mac(gateway, table) if gateway else None
        return (
            gateway.ip if gateway else None,
            salted_sha256(self.context.salt, mac) if mac else None,
            len(macs),
        )

    def _raw_packets_possible(self, purpose: str) -> bool:
        """Whether scapy and CAP_NET_RAW are there; if not, a problem says which is missing."""
        if not has_cap_net_raw(str(self.context.proc_root)):
            self.problem(f"{purpose} needs CAP_NET_RAW, which this agent lacks; skipped")
            return False
        if find_spec("scapy") is None:
            self.problem(f"{purpose} needs scapy (pip install 'farmwatch[raw]'); skipped")
            return False
        return True

    def _bssid_hash(self, wifi_interfaces: list[str]) -> str | None:
        try:
            bssid = current_bssid(self.context.run, self.context.platform, wifi_interfaces)
        except BssidUnavailable as unknown:
            self.problem(f"Wi-Fi access point unknown: {unknown}")
            return None
        return salted_sha256(self.context.salt, bssid) if bssid else None

    def _anchor_probes(self) -> list[LatencyProbe]:
        samples, timeout_s = self.options.samples, self.options.timeout_seconds
        method, sampler = "tcp", tcp_connect_rtt
        if self.options.method == "icmp":
            if self._raw_packets_possible("ICMP anchor probing (measured with TCP connects instead)"):
                method, sampler = "icmp", icmp_echo_rtt
        measured = measure_all(self.context.anchors, samples, timeout_s, method, sampler)
        for probe in measured:
            if probe.sent == 0:
                self.problem(f"anchor {probe.target}: {probe.address} did not resolve; nothing sent")
        return measured

