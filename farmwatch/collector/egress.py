"""Where a report came from: the ingest record's ``geo`` (country, ASN, network kind).

Country comes from a MaxMind-format city/country database when ``[geo] city_db`` names one
(GeoLite2, DB-IP Lite), else from ``iptocc`` (built from the regional internet registries'
delegation files: the country an address block was assigned to). ASN and its organisation come
from ``[geo] asn_db`` when given. ``network_kind`` is "corporate" for the company's own egress
ranges (``[geo] corporate_networks``), then "hosting", "vpn", "mobile" or "cgnat" when the ASN is
in ``data/network_kinds.csv`` (cloud and hosting companies, anonymisers, mobile carriers, CGNAT
satellite; sources in its header), then "cgnat" when the source address or the report's own
``network.gateway_ip`` lies in RFC 6598 shared address space (100.64.0.0/10, handed out only by
carrier-grade NAT). Residential networks need data we do not ship yet, so everything else is "unknown".
"""

from __future__ import annotations

import csv
import functools
import ipaddress
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import iptocc
import maxminddb

from farmwatch.collector.config import ConfigError, Network


class GeoLookup:
    """Looks addresses up in the configured databases, opened once for the life of the process."""

    def __init__(self, corporate: Sequence[Network], city_db: Path | None = None, asn_db: Path | None = None) -> None:
        self.corporate = tuple(corporate)
        self._city = _open(city_db, "city_db")
        self._asn = _open(asn_db, "asn_db")
        self.kinds = network_kinds()

    def lookup(self, address: str) -> dict[str, Any]:
        """The ingest record's ``geo`` object (:class:`farmwatch.contract.Geo`) for ``address`` (unknown parts null)."""
        try:
            ip = parse_address(address)
        except ValueError:
            return {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}
        city = _record(self._city, ip)
        asn = _record(self._asn, ip)
        country = (city.get("country") or {}).get("iso_code") if self._city else iptocc.country_code(str(ip))
        return {
            "country": country,
            "asn": asn.get("autonomous_system_number"),
            "asn_org": asn.get("autonomous_system_organization"),
            "network_kind": self._kind(ip, asn.get("autonomous_system_number")),
        }

    def _kind(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, asn: object) -> str:
        if within(str(ip), self.corporate):
            return "corporate"
        return self.kinds.get(asn, "unknown") if isinstance(asn, int) else "unknown"


SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
"""RFC 6598 shared address space: only carrier-grade NAT hands it out."""


def with_report_evidence(geo: dict[str, Any], source_ip: str, gateway_ip: str | None) -> dict[str, Any]:
    """``geo`` with ``network_kind`` "cgnat" when the source address or the reporting laptop's default
    gateway is in 100.64.0.0/10 and nothing more specific (corporate, a catalogued kind) is known."""
    if geo["network_kind"] != "unknown":
        return geo
    if any(within(address, (SHARED_ADDRESS_SPACE,)) for address in (source_ip, gateway_ip) if address):
        return {**geo, "network_kind": "cgnat"}
    return geo


def network_kinds() -> dict[int, str]:
    """ASN -> "hosting" | "vpn" | "mobile" | "cgnat", from the shipped catalogue."""
    text = resources.files("farmwatch.collector.data").joinpath("network_kinds.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {int(row["asn"]): row["kind"] for row in rows}


def within(address: str, networks: Sequence[Network]) -> bool:
    """True when ``address`` is a valid IP inside any of ``networks``."""
    try:
        ip = parse_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


# Every report asks about its source and gateway addresses (a few per laptop, asked again and again),
# and ipaddress parses in Python: a bounded memory of the answers. Refusals (ValueError) are not kept.
parse_address = functools.lru_cache(maxsize=65_536)(ipaddress.ip_address)


def _open(path: Path | None, key: str) -> maxminddb.Reader | None:
    if path is None:
        return None
    try:
        return maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as failure:
        raise ConfigError(f"[geo] {key}: cannot open {path} as a MaxMind-format database ({failure})") from None


def _record(reader: maxminddb.Reader | None, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dict[str, Any]:
    if reader is None:
        return {}
    try:
        found = reader.get(ip)
    except ValueError:  # an IPv6 address in an IPv4-only database
        return {}
    return found if isinstance(found, dict) else {}
