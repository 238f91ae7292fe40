"""The network probe: interface kinds, VPN products, gateway, Wi-Fi BSSID, anchor latency.

Parsers run over trees built by hand (tests/fixtures/sysfs/laptop-net, tests/fixtures/proc/laptop-net:
a laptop's /sys/class/net and /proc/net/{route,arp} laid out as the kernel does, reduced to the files
the probe reads, since Wi-Fi, WWAN and VPN hardware cannot exist on a test box) and over Wi-Fi tool
output written by hand in each tool's format (replayed through the injected ``run``). Real devices are
then made in a network namespace of our own and read from the live kernel.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from delayline import Lab, lab  # noqa: F401  (fixture)

from farmwatch.agent.probes.network.anchor_latency import measure_all
from farmwatch.agent.probes.network.interfaces import read_interfaces
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.network.probe import NetworkProbe
from farmwatch.agent.probes.network.vpn_catalog import load_catalog, products_running
from farmwatch.agent.probes.network.wifi import (
    parse_airport,
    parse_hardware_ports,
    parse_ipconfig_summary,
    parse_iw_link,
    parse_netsh,
    parse_nmcli,
)
from farmwatch.contract import Anchor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SYS = FIXTURES / "sysfs" / "laptop-net"
PROC = FIXTURES / "proc" / "laptop-net"
SALT = "acme-fleet-salt"


def _hash(value: str) -> str:
    return hashlib.sha256(f"{SALT}\x00{value}".encode()).hexdigest()


def _no_tools(argv: Sequence[str]) -> str:
    raise FileNotFoundError(2, "No such file or directory", argv[0])


def _probe(run=_no_tools, proc: Path = PROC, platform: str = "linux", **options: object) -> NetworkProbe:
    context = ProbeContext(salt=SALT, sys_root=SYS, proc_root=proc, run=run, platform=platform,
                           options={"network": options})
    return NetworkProbe(context)


@pytest.mark.parametrize(
    ("name", "kind", "driver"),
    [
        pytest.param("lo", "loopback", None, id="loopback"),
        pytest.param("enp0s31f6", "ethernet", "e1000e", id="pci-ethernet"),
        pytest.param("wlp2s0", "wifi", "iwlwifi", id="wifi"),
        pytest.param("wwan0", "other", "cdc_mbim", id="wwan-modem"),
        pytest.param("tun0", "vpn", "tun", id="tun"),
        pytest.param("wg0", "vpn", "wireguard", id="wireguard"),
        pytest.param("ppp0", "vpn", None, id="ppp"),
        pytest.param("docker0", "virtual", "bridge", id="docker-bridge"),
        pytest.param("veth3f2a1b7", "virtual", None, id="veth"),
    ],
)
def test_interface_kinds_from_captured_sysfs(name: str, kind: str, driver: str | None) -> None:
    links = {link.name: link for link in read_interfaces(SYS)}
    assert (links[name].kind, links[name].driver) == (kind, driver)


def test_vpn_products_from_names_and_running_clients() -> None:
    facts = _probe().collect()
    products = {i.name: i.vpn_product for i in facts.interfaces if i.kind == "vpn"}
    # tailscale0 is named by Tailscale's own interface name; mullvad-daemon runs, so the generic
    # wg0/tun0/ppp0 tunnels are put down to Mullvad rather than to bare WireGuard.
    assert products == {"tailscale0": "Tailscale", "wg0": "Mullvad VPN", "tun0": "Mullvad VPN", "ppp0": "Mullvad VPN"}
    assert all(i.vpn_product is None for i in facts.interfaces if i.kind != "vpn")


def test_vpn_products_without_clients_come_from_names_only(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "stat").write_text("1 (systemd) S 0 1 1 0 -1 4194560 1200 0 10 0 30 20 0 0 20 0 1 0 110\n")
    facts = _probe(proc=tmp_path).collect()
    products = {i.name: i.vpn_product for i in facts.interfaces if i.kind == "vpn"}
    assert products == {"tailscale0": "Tailscale", "wg0": "WireGuard", "tun0": None, "ppp0": None}


def test_vpn_clients_are_found_by_full_name_without_exe_or_by_the_15_characters_linux_keeps() -> None:
    # "openvpn3-servi" has 14 characters: a whole name, not a cut one, so it is no prefix of openvpn3-service
    names = ["systemd", "ProtonVPNService.exe", "expressvpn-daem", "openvpn3-servi"]
    assert {product.product for product in products_running(load_catalog(), names)} == {"Proton VPN", "ExpressVPN"}


def test_gateway_and_neighbours_from_captured_proc() -> None:
    probe = _probe()
    facts = probe.collect()
    # Two default routes: the wired one has the lower metric (100 < 600).
    assert facts.gateway_ip == "172.16.0.1"
    assert facts.gateway_mac_hash == _hash("3c:84:6a:0e:51:b2")
    # Four distinct resolved MACs: the incomplete 192.168.1.24 and the repeated a4:83:e7... count once.
    assert facts.lan_neighbors == 4
    assert "3c:84:6a" not in json.dumps(facts.model_dump())


def test_missing_wifi_tools_are_reported_not_raised() -> None:
    probe = _probe()
    facts = probe.collect()
    assert facts.wifi_bssid_hash is None
    assert any("Wi-Fi access point unknown" in p and "nmcli" in p and "iw" in p for p in probe.problems)


NMCLI = "no:9C\\:3D\\:CF\\:00\\:11\\:22\nyes:F4\\:92\\:BF\\:A0\\:0B\\:1C\nno:\n"
IW_LINK = ("Connected to f4:92:bf:a0:0b:1c (on wlp2s0)\n\tSSID: home-5G\n\tfreq: 5180\n"
           "\tsignal: -51 dBm\n\ttx bitrate: 866.7 MBit/s\n")
AIRPORT = ("     agrCtlRSSI: -52\n     agrExtRSSI: 0\n          state: running\n"
           "        op mode: station \n     lastTxRate: 867\n        maxRate: 867\n"
           "          BSSID: f4:92:bf:a0:b:1c\n           SSID: home-5G\n        channel: 36,80\n")
NETSH = ("\nThere is 1 interface on the system:\n\n    Name                   : Wi-Fi\n"
         "    Description            : Intel(R) Wi-Fi 6 AX201 160MHz\n    State                  : connected\n"
         "    SSID                   : home-5G\n    AP BSSID               : f4:92:bf:a0:0b:1c\n"
         "    Band                   : 5 GHz\n    Radio type             : 802.11ac\n")


@pytest.mark.parametrize(
    ("parse", "output", "expected"),
    [
        pytest.param(parse_nmcli, NMCLI, "f4:92:bf:a0:0b:1c", id="nmcli"),
        pytest.param(parse_nmcli, "no:9C\\:3D\\:CF\\:00\\:11\\:22\n", None, id="nmcli-not-associated"),
        pytest.param(parse_iw_link, IW_LINK, "f4:92:bf:a0:0b:1c", id="iw"),
        pytest.param(parse_iw_link, "Not connected.\n", None, id="iw-not-connected"),
        pytest.param(parse_airport, AIRPORT, "f4:92:bf:a0:0b:1c", id="airport-drops-leading-zeros"),
        pytest.param(parse_netsh, NETSH, "f4:92:bf:a0:0b:1c", id="netsh"),
    ],
)
def test_bssid_parsers(parse, output: str, expected: str | None) -> None:
    assert parse(output) == expected


def test_bssid_falls_back_to_iw_and_is_hashed() -> None:
    asked: list[list[str]] = []

    def replay(argv: Sequence[str]) -> str:
        asked.append(list(argv))
        if argv[0] == "nmcli":
            raise FileNotFoundError(2, "No such file or directory", "nmcli")
        return IW_LINK

    probe = _probe(run=replay)
    facts = probe.collect()
    assert asked[-1] == ["iw", "dev", "wlp2s0", "link"]
    assert facts.wifi_bssid_hash == _hash("f4:92:bf:a0:0b:1c")
    assert not any("Wi-Fi" in p for p in probe.problems)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        pytest.param({"samples": "five"}, "probe_options.network.samples", id="not-a-number"),
        pytest.param({"samples": 0}, "probe_options.network.samples", id="too-few"),
        pytest.param({"timeout_seconds": 600}, "probe_options.network.timeout_seconds", id="too-long"),
        pytest.param({"method": "udp"}, "probe_options.network.method", id="not-a-method"),
        pytest.param({"arp_sweep": "yes"}, "probe_options.network.arp_sweep", id="not-a-boolean"),
        pytest.param({"sampels": 3}, "probe_options.network.sampels: not an option", id="unknown-key"),
    ],
)
def test_bad_options_are_named_and_defaults_used(options: dict, named: str) -> None:
    probe = _probe(**options)
    probe.collect()
    assert [p for p in probe.problems if p.startswith(named)], probe.problems


def test_macos_names_interfaces_and_reads_airport() -> None:
    probe = _probe(run=lambda argv: AIRPORT if "airport" in argv[0] else _no_tools(argv), platform="darwin")
    facts = probe.collect()
    kinds = {i.name: i.kind for i in facts.interfaces}
    assert kinds.get("lo") == "loopback" and set(kinds.values()) <= {"loopback", "vpn", "other"}
    assert facts.wifi_bssid_hash == _hash("f4:92:bf:a0:0b:1c")
    assert (facts.gateway_ip, facts.lan_neighbors) == (None, None)
    assert any("guessed from names" in p for p in probe.problems)


def _anchor(name: str, port: int, address: str = "127.0.0.1") -> Anchor:
    return Anchor(name=name, address=address, port=port, latitude=0.0, longitude=0.0)


def test_anchor_probe_over_loopback_listener_and_refused_port() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens now: the kernel answers the SYN with RST
    try:
        open_probe, refused = measure_all(
            [_anchor("open", listener.getsockname()[1]), _anchor("refused", closed_port)], samples=4, timeout_s=2)
    finally:
        listener.close()
    for probe in (open_probe, refused):
        assert (probe.sent, probe.received, probe.method) == (4, 4, "tcp")
        assert probe.rtt_min_ms is not None and probe.rtt_median_ms is not None and probe.rtt_max_ms is not None
        assert probe.rtt_min_ms <= probe.rtt_median_ms <= probe.rtt_max_ms
    assert [p.target for p in (open_probe, refused)] == ["open", "refused"]


_KINDS_IN_NAMESPACE = (
    "import json; from pathlib import Path; from farmwatch.agent.probes.network.interfaces import read_interfaces;"
    "print(json.dumps({l.name: l.kind for l in read_interfaces(Path('/sys'))}))"
)


def test_kinds_of_real_devices_in_a_namespace(lab: Lab) -> None:  # noqa: F811
    ns = lab.near
    for argv in (["link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b"],
                 ["link", "add", "br-test", "type", "bridge"],
                 ["tuntap", "add", "dev", "tun7", "mode", "tun"],
                 ["tuntap", "add", "dev", "tap7", "mode", "tap"]):
        subprocess.run(["ip", "-n", ns, *argv], check=True)
    done = lab.run(ns, [sys.executable, "-c", _KINDS_IN_NAMESPACE])
    assert done.returncode == 0, done.stderr
    kinds = json.loads(done.stdout)
    assert kinds == {"lo": "loopback", "veth-a": "virtual", "veth-b": "virtual", "br-test": "virtual",
                     "tun7": "vpn", "tap7": "vpn"}


_NETWORK_IN_NAMESPACE = """
import json, sys
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.network.probe import NetworkProbe
from farmwatch.contract import Anchor
options, anchors = json.loads(sys.argv[1]), [Anchor(**a) for a in json.loads(sys.argv[2])]
probe = NetworkProbe(ProbeContext(salt={salt!r}, anchors=anchors, options={{"network": options}}))
if sys.argv[3:] == ["unprivileged"]:  # like an agent run as an ordinary user: no CAP_NET_RAW
    # Read first what nobody could not read later: this interpreter lives under /root (0700), and a
    # checkout may sit in a private directory too (the agent's package is world-readable when installed).
    import os, encodings.idna, scapy.sendrecv
    from farmwatch.agent.probes.network.vpn_catalog import load_catalog
    load_catalog()
    os.setgid(65534); os.setuid(65534)
facts = probe.collect()
print(json.dumps({{"facts": facts.model_dump(mode="json"), "problems": probe.problems}}))
""".format(salt=SALT)


def _network_in(lab: Lab, options: dict | None = None, anchors: Sequence[Anchor] = (),  # noqa: F811
                *flags: str) -> dict:
    """The network probe run inside the lab's near namespace; its section and problems."""
    argv = [sys.executable, "-c", _NETWORK_IN_NAMESPACE, json.dumps(options or {}),
            json.dumps([a.model_dump() for a in anchors]), *flags]
    done = lab.run(lab.near, argv)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _veth(lab: Lab, near_dev: str, far_dev: str, far_ns: str) -> None:  # noqa: F811
    subprocess.run(["ip", "-n", lab.near, "link", "add", near_dev, "type", "veth", "peer", "name", far_dev,
                    "netns", far_ns], check=True)


def _up(ns: str, dev: str, address: str | None = None, mac: str | None = None) -> None:
    if address:
        subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", dev], check=True)
    if mac:
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "address", mac], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)


def test_gateway_and_neighbours_of_a_real_namespace(lab: Lab) -> None:  # noqa: F811
    router = lab.add_namespace("g")  # a second namespace playing the home router
    mac = "02:00:5e:10:00:01"
    _veth(lab, "lan0", "rtr0", router)
    _up(lab.near, "lan0", "192.168.77.20/24")
    _up(router, "rtr0", "192.168.77.1/24", mac)
    subprocess.run(["ip", "-n", lab.near, "route", "add", "default", "via", "192.168.77.1"], check=True)
    # One packet to the router makes the kernel resolve its MAC into the neighbour table.
    touch = "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('192.168.77.1', 9))"
    lab.run(lab.near, [sys.executable, "-c", touch])
    facts = _network_in(lab)["facts"]
    assert [facts["gateway_ip"], facts["gateway_mac_hash"], facts["lan_neighbors"]] == ["192.168.77.1", _hash(mac), 1]


def _wait_forwarding(switch: str, ports: list[str]) -> None:
    """Until every bridge port has carrier and forwards (a fresh port passes through "learning")."""
    for _ in range(100):
        shown = json.loads(subprocess.run(["ip", "-n", switch, "-j", "-d", "link", "show"], capture_output=True,
                                          text=True, check=True).stdout)
        ready = {link["ifname"] for link in shown if link.get("operstate") == "UP"
                 and link.get("linkinfo", {}).get("info_slave_data", {}).get("state") == "forwarding"}
        if set(ports) <= ready:
            return
        time.sleep(0.1)
    raise AssertionError(f"bridge ports of {switch} never forwarded: {shown}")


def test_arp_sweep_finds_quiet_neighbours_when_configured(lab: Lab) -> None:  # noqa: F811
    """Three hosts on a bridged LAN the laptop never talked to: only the sweep counts them."""
    switch = lab.add_namespace("s")
    _veth(lab, "lan0", "port0", switch)
    _up(lab.near, "lan0", "192.168.88.20/24")
    subprocess.run(["ip", "-n", switch, "link", "add", "br0", "type", "bridge"], check=True)
    _up(switch, "br0")
    for index in range(1, 4):
        host = lab.add_namespace(f"h{index}")
        subprocess.run(["ip", "-n", switch, "link", "add", f"port{index}", "type", "veth", "peer", "name", "eth0",
                        "netns", host], check=True)
        _up(host, "eth0", f"192.168.88.{index}/24", f"02:00:5e:20:00:0{index}")
    for port in range(4):
        subprocess.run(["ip", "-n", switch, "link", "set", f"port{port}", "master", "br0"], check=True)
        _up(switch, f"port{port}")
    _wait_forwarding(switch, [f"port{port}" for port in range(4)])
    assert _network_in(lab)["facts"]["lan_neighbors"] == 0  # passive: nobody talked yet
    swept = _network_in(lab, {"arp_sweep": True})
    assert swept["facts"]["lan_neighbors"] == 3, swept


def test_icmp_anchor_probe_across_the_delay_line(lab: Lab) -> None:  # noqa: F811
    link = lab.far_peer(60.0)
    result = _network_in(lab, {"method": "icmp", "samples": 3}, [_anchor("far", 0, link.far_ip)])
    (probe,) = result["facts"]["probes"]
    assert (probe["method"], probe["sent"], probe["received"]) == ("icmp", 3, 3)
    assert probe["rtt_min_ms"] >= 60.0  # the line only adds delay
    assert result["problems"] == []


def test_without_root_the_default_path_works_and_the_rest_is_said(lab: Lab) -> None:  # noqa: F811
    link = lab.far_peer(20.0)
    lab.server(link.far_ns, 443)
    options = {"method": "icmp", "arp_sweep": True, "samples": 2}
    result = _network_in(lab, options, [_anchor("far", 443, link.far_ip)], "unprivileged")
    (probe,) = result["facts"]["probes"]
    assert (probe["method"], probe["sent"], probe["received"]) == ("tcp", 2, 2)
    assert probe["rtt_min_ms"] >= 20.0
    assert {kind for kind in (i["kind"] for i in result["facts"]["interfaces"])} == {"loopback", "vpn"}
    assert sorted(p.split(" needs ")[0] for p in result["problems"] if "CAP_NET_RAW" in p) == [
        "ICMP anchor probing (measured with TCP connects instead)", "the ARP sweep"]


# macOS answers written by hand in the tools' documented shapes (no Mac here to record one): the
# getsummary dictionary as quoted from macOS 15.6 in github.com/dracula/tmux/issues/358, and
# networksetup's "Hardware Port / Device / Ethernet Address" blocks.
NETWORKSETUP = ("\nHardware Port: Thunderbolt Ethernet Slot 0\nDevice: en5\nEthernet Address: 36:1a:2b:00:11:22\n\n"
                "Hardware Port: Wi-Fi\nDevice: en0\nEthernet Address: a4:83:e7:00:11:22\n\n"
                "VLAN Configurations\n===================\n")
SUMMARY = ("<dictionary> {\n  BSSID : f4:92:bf:a0:b:1c\n  IPv4 : <array> {\n    0 : <dictionary> {\n"
           "      Addresses : <array> {\n        0 : 192.168.1.23\n      }\n    }\n  }\n"
           "  InterfaceType : WiFi\n  LinkStatusActive : TRUE\n  SSID : home-5G\n  Security : WPA2_PSK\n}\n")
REDACTED = SUMMARY.replace("f4:92:bf:a0:b:1c", "<redacted>").replace("home-5G", "<redacted>")
NOT_ASSOCIATED = "<dictionary> {\n  InterfaceType : WiFi\n  LinkStatusActive : FALSE\n}\n"


def _mac(answers: dict[str, str]) -> tuple[NetworkProbe, list[list[str]]]:
    """A macOS network probe whose commands answer from ``answers`` (keyed by the command's name)."""
    asked: list[list[str]] = []

    def replay(argv: Sequence[str]) -> str:
        asked.append(list(argv))
        name = argv[0].rsplit("/", 1)[-1]
        if name not in answers:
            raise FileNotFoundError(2, "No such file or directory", argv[0])
        return answers[name]

    return _probe(run=replay, platform="darwin"), asked


def test_macos_wifi_devices_come_from_networksetup() -> None:
    assert parse_hardware_ports(NETWORKSETUP) == ["en0"]
    assert parse_ipconfig_summary(SUMMARY) == "f4:92:bf:a0:0b:1c"
    assert parse_ipconfig_summary(NOT_ASSOCIATED) is None


def test_macos_without_airport_reads_ipconfig_getsummary() -> None:
    probe, asked = _mac({"networksetup": NETWORKSETUP, "ipconfig": SUMMARY})
    facts = probe.collect()
    assert ["ipconfig", "getsummary", "en0"] in asked
    assert not any("airport" in argv[0] for argv in asked)
    assert facts.wifi_bssid_hash == _hash("f4:92:bf:a0:0b:1c")
    assert not any("Wi-Fi" in p for p in probe.problems)


def test_macos_not_associated_or_without_wifi_is_no_access_point_and_no_error() -> None:
    for answers in ({"networksetup": NETWORKSETUP, "ipconfig": NOT_ASSOCIATED},
                    {"networksetup": NETWORKSETUP.replace("Wi-Fi", "USB 10/100/1000 LAN")}):
        probe, _ = _mac(answers)
        assert probe.collect().wifi_bssid_hash is None
        assert not any("Wi-Fi" in p for p in probe.problems)


def test_macos_redacted_bssid_without_airport_is_an_error_entry() -> None:
    probe, _ = _mac({"networksetup": NETWORKSETUP, "ipconfig": REDACTED})
    facts = probe.collect()
    assert facts.wifi_bssid_hash is None
    [problem] = [p for p in probe.problems if "Wi-Fi access point unknown" in p]
    assert "<redacted>" in problem and "Location Services" in problem and "airport failed" in problem


def test_macos_before_14_4_falls_back_to_airport() -> None:
    probe, asked = _mac({"networksetup": NETWORKSETUP, "airport": AIRPORT})  # no getsummary there
    assert probe.collect().wifi_bssid_hash == _hash("f4:92:bf:a0:0b:1c")
    assert asked[-1][-1] == "-I"
