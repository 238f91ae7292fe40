"""colocation (issue 16): a shared public address is not a shared room.

Hand-made records, three employees' laptops reporting every 5 minutes for 6 hours. Strangers behind
carrier-grade NAT or a VPN exit share addresses by chance; a farm's laptops share a router.
"""

from __future__ import annotations

from typing import Any

import pytest
from detector_records import make_record, network, roster_entry, run

from farmwatch.detectors.signals.colocation import ColocationDetector

HOURS = 6
WINDOWS = HOURS * 12


def _laptop(device: str, egress: Any, gateway: str | None = None, kind: str = "residential",
            gateway_ip: str = "192.168.1.1") -> list[dict[str, Any]]:
    """``device``'s reports; ``egress`` is one address or a function of the window number."""
    records = []
    for window in range(WINDOWS):
        section = network(gateway=gateway, bssid=None if gateway is None else gateway + "-ap")
        section["gateway_ip"] = gateway_ip
        address = egress(window) if callable(egress) else egress
        records.append(make_record(device, 5 * window, source_ip=address, geo={"network_kind": kind},
                                   network=section))
    return records


def _colocated(records: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return run(ColocationDetector, records, [roster_entry(d) for d in "abc"], **params)


def test_three_routers_behind_one_public_address_are_not_a_room() -> None:
    # Each laptop reports its own gateway MAC: three homes that a carrier's NAT put on one address.
    records = [r for d in "abc" for r in _laptop(d, "172.58.1.10", gateway=f"home-{d}", kind="unknown")]
    assert _colocated(records) == {}


def test_the_same_addresses_behind_one_router_are_a_room() -> None:
    records = [r for d in "abc" for r in _laptop(d, "172.58.1.10", gateway="farm", kind="unknown")]
    found = _colocated(records)
    assert sorted(found) == ["a", "b", "c"]
    assert found["a"].evidence["shared"] == ["egress_ip", "gateway_mac", "wifi_bssid"]


@pytest.mark.parametrize(("kind", "gateway_ip"), [
    pytest.param("mobile", "192.168.12.1", id="mobile-carrier"),
    pytest.param("cgnat", "192.168.1.1", id="catalogued-cgnat"),
    pytest.param("vpn", "192.168.1.1", id="vpn-exit"),
    pytest.param("unknown", "100.72.0.1", id="rfc6598-gateway"),
])
def test_egress_that_strangers_share_links_nobody_without_a_lan_identity(kind: str, gateway_ip: str) -> None:
    # No LAN identity reported (an agent without it): the address is all there is, and it is a shared one.
    records = [r for d in "abc" for r in _laptop(d, "172.58.1.10", kind=kind, gateway_ip=gateway_ip)]
    assert _colocated(records) == {}


def test_a_farm_behind_5g_home_internet_is_found_by_its_router() -> None:
    # One router, the carrier's NAT mapping changing every hour: the LAN identity still links them.
    pool = ("172.58.1.10", "172.58.1.11", "172.58.1.12")
    records = [r for d in "abc" for r in _laptop(d, lambda w: pool[(w // 12) % 3], gateway="farm", kind="mobile")]
    found = _colocated(records)
    assert sorted(found) == ["a", "b", "c"]
    assert found["a"].evidence["shared"] == ["gateway_mac", "wifi_bssid"]


def test_without_lan_identities_only_egress_that_moves_together_links() -> None:
    pool = ("73.1.2.3", "73.1.2.4", "73.1.2.5")
    # Together: every laptop changes address at the same moments (one line renumbered).
    together = [r for d in "abc" for r in _laptop(d, lambda w: pool[(w // 24) % 3], kind="unknown")]
    assert sorted(_colocated(together)) == ["a", "b", "c"]
    # Mappings that churn independently: they meet in every hour (so an hourly view links them) but
    # in only about a third of the windows: strangers.
    churn = {"a": lambda w: pool[w % 3], "b": lambda w: pool[(w // 2) % 3], "c": lambda w: pool[(2 * w) % 3]}
    apart = [r for d in "abc" for r in _laptop(d, churn[d], kind="unknown")]
    assert _colocated(apart) == {}
    assert _colocated(apart, min_comovement=0.0) != {}  # the hours alone would have linked them
