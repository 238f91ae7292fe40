"""session_distance, location_proof, geo_mismatch, colocation on hand-made records: pinned scores and evidence."""

from __future__ import annotations

import pytest
from detector_records import ANCHORS, NOW, connection, make_record, network, probe, roster_entry, run, tool, user_input

from farmwatch.detectors.signals.colocation import ColocationDetector
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.distance import great_circle_km
from farmwatch.detectors.pipeline import score
from farmwatch.detectors.signals.geo_mismatch import GeoMismatchDetector
from farmwatch.detectors.signals.location_proof import LocationProofDetector
from farmwatch.detectors.signals.session_distance import SessionDistanceDetector

BOSTON = (42.36, -71.06)
SAN_JOSE = (37.34, -121.89)


def _sessions(device: str, rtt: float, reports: int = 2, name: str = "anydesk") -> list[dict]:
    return [make_record(device, 5 * k, remote_access=[tool(name, "AnyDesk", connection("175.45.176.71", min_rtt_ms=rtt))])
            for k in range(reports)]


@pytest.mark.parametrize(
    ("rtt", "approved", "expected"),
    [
        pytest.param(190.0, (), 0.85, id="asia-capped"),
        pytest.param(95.0, (), 0.85 * ((95 - 20) * 40 - 2000) / 4000, id="partway"),
        pytest.param(190.0, ("anydesk",), 0.85 * 0.25, id="approved-quartered"),
    ],
)
def test_session_distance_scores_the_likely_distance(rtt, approved, expected) -> None:
    found = run(SessionDistanceDetector, _sessions("d1", rtt), [roster_entry("d1", approved)])
    finding = found["d1"]
    assert finding.score == pytest.approx(expected, abs=1e-4)
    assert finding.evidence["likely_min_km"] == (rtt - 20) * 40
    assert finding.evidence["light_bound_km"] == rtt * 100
    assert finding.evidence["peer"] == "175.45.176.71" and finding.evidence["session_reports"] == 2


def _outbound(rtt: float, domain: str | None = None, **sections) -> list[dict]:
    """One window of AnyDesk dialling out (peer-to-peer, or to a relay when ``domain`` is given)."""
    dialled = {**connection("175.45.176.71", "outbound", min_rtt_ms=rtt), "domain": domain}
    return [make_record("d1", 0, remote_access=[tool("anydesk", "AnyDesk", dialled)], **sections)]


@pytest.mark.parametrize(("records", "expected"), [
    pytest.param(_sessions("d1", 190.0, reports=1), 0.85, id="inbound-one-window"),
    pytest.param(_outbound(180.0), 0.85, id="outbound-direct-peer-one-window"),
    pytest.param(_outbound(180.0, input=user_input(injected=900)), 0.85, id="outbound-driven-by-injected-input"),
    pytest.param(_outbound(180.0, input=user_input()), 0.85 * 0.25, id="outbound-while-own-hands-type"),
    pytest.param(_outbound(180.0, network=network([probe("us-central", 12.0)])), 0.85, id="a-quick-link-changes-nothing"),
])
def test_session_distance_one_window_of_a_far_direct_peer_counts(records, expected) -> None:
    finding = run(SessionDistanceDetector, records, [roster_entry("d1")])["d1"]
    assert finding.score == pytest.approx(expected, abs=1e-4)
    assert finding.evidence["session_reports"] == 1 and finding.evidence["local_floor_ms"] == 20.0
    assert "175.45.176.71" in finding.summary


@pytest.mark.parametrize("records", [
    pytest.param(_sessions("d1", 30.0), id="near-peer"),
    pytest.param(_sessions("d1", 95.0, reports=1), id="one-window-not-far-enough"),
    pytest.param(_outbound(180.0, domain="net.anydesk.com"), id="catalogued-relay-says-nothing"),
    pytest.param([make_record("d1", 0, sessions=[{"kind": "ssh", "user": "dev", "remote_ip": "175.45.176.71",
                                                  "min_rtt_ms": 190.0}])], id="one-window-of-ssh"),
    # Geostationary satellite internet: ~600 ms to every anchor, so 650 ms to a peer says nothing.
    pytest.param(_outbound(650.0, network=network([probe("us-central", 600.0)])), id="slow-access-link"),
])
def test_session_distance_stays_quiet(records) -> None:
    assert run(SessionDistanceDetector, records, [roster_entry("d1")]) == {}


def test_location_proof_light_speed_violation_names_anchor_and_margin() -> None:
    records = [make_record("d1", 5 * k, network=network([probe("us-west", 12.0)])) for k in range(6)]
    finding = run(LocationProofDetector, records, [roster_entry("d1", lat=BOSTON[0], lon=BOSTON[1])], ANCHORS)["d1"]
    claimed = great_circle_km(*BOSTON, *SAN_JOSE)
    assert finding.evidence["anchor"] == "us-west"
    assert finding.evidence["bound_km"] == 1200.0
    assert finding.evidence["claimed_distance_km"] == pytest.approx(claimed, abs=0.01)
    assert finding.evidence["typical_violation_km"] == pytest.approx(claimed - 1200 - 150, abs=0.01)
    assert finding.score == pytest.approx(0.95)  # every report violates, by more than 1,000 km


def test_location_proof_a_trip_weighs_by_share_squared() -> None:
    records = [make_record("d1", 5 * k, network=network([probe("us-west", 12.0 if k < 3 else 50.0)]))
               for k in range(9)]
    finding = run(LocationProofDetector, records, [roster_entry("d1", lat=BOSTON[0], lon=BOSTON[1])], ANCHORS)["d1"]
    assert finding.evidence["violating_share"] == pytest.approx(1 / 3, abs=1e-3)
    assert finding.score == pytest.approx(0.95 / 9, abs=1e-4)


@pytest.mark.parametrize(("vpn", "expected"), [pytest.param(None, 0.3, id="too-slow"), pytest.param("globalprotect", None, id="vpn-hairpin-excused")])
def test_location_proof_consistently_slow_is_weak(vpn, expected) -> None:
    records = [make_record("d1", 5 * k, network=network([probe("us-central", 80.0)], vpn=vpn)) for k in range(6)]
    found = run(LocationProofDetector, records, [roster_entry("d1", lat=32.78, lon=-96.80)], ANCHORS)  # Dallas
    assert (found["d1"].score if found else None) == expected
    if found:
        assert found["d1"].evidence["kind"] == "too_slow"


def test_location_proof_consistent_location_is_quiet() -> None:
    # Chicago to the Dallas anchor is ~1,290 km: 12 ms bounds 1,200 km, inside the 150 km slack.
    records = [make_record("d1", 5 * k, network=network([probe("us-central", 12.0), probe("us-west", 45.0)]))
               for k in range(6)]
    assert run(LocationProofDetector, records, [roster_entry("d1")], ANCHORS) == {}


def test_geo_mismatch_foreign_egress_and_operator_vpn() -> None:
    records = [make_record("d1", 5 * k, geo={"country": "CN"}, network=network(vpn="Astrill")) for k in range(4)]
    finding = run(GeoMismatchDetector, records, [roster_entry("d1")])["d1"]
    assert finding.evidence["foreign_countries"] == ["CN"]
    assert finding.evidence["operator_vpn"] == ["astrill"]
    assert finding.score == pytest.approx(1 - (1 - 0.45) * (1 - 0.5))


def test_geo_mismatch_hosting_egress_and_country_hop() -> None:
    records = [make_record("d1", 0, geo={"network_kind": "hosting", "asn_org": "M247"}),
               make_record("d1", 5, geo={"country": "US"}), make_record("d1", 10, geo={"country": "MX"}),
               make_record("d1", 15, geo={"country": "US"})]
    finding = run(GeoMismatchDetector, records, [roster_entry("d1")])["d1"]
    assert finding.evidence["anonymiser_share"] == 0.25 and finding.evidence["anonymiser_networks"] == ["M247"]
    assert finding.evidence["country_hops"] == 2
    parts = {"country": 0.45 * (1 / 3) * 0.5, "anonymiser": 0.45 * 0.25, "impossible_travel": 0.25}
    assert finding.evidence["parts"] == pytest.approx(parts, abs=1e-3)


def test_geo_mismatch_skips_company_egress() -> None:
    records = [make_record("d1", 5 * k, geo={"country": "GB"}, source_ip="198.51.100.7") for k in range(4)]
    config = DetectionConfig(corporate_networks=("198.51.100.0/24",))
    assert run(GeoMismatchDetector, records, [roster_entry("d1")], config=config) == {}


def _shared(device: str, hours: int, gateway: str = "farm", start: int = 0, ip: str = "73.1.2.3") -> list[dict]:
    return [make_record(device, start + 60 * h, network=network(gateway=gateway, bssid=gateway + "-ap"),
                        source_ip=ip) for h in range(hours)]


def test_colocation_cluster_of_three_claimed_apart() -> None:
    records = _shared("a", 6) + _shared("b", 6) + _shared("c", 6)
    roster = [roster_entry("a", lat=42.36, lon=-71.06), roster_entry("b", lat=41.88, lon=-87.63),
              roster_entry("c", lat=47.61, lon=-122.33)]
    found = run(ColocationDetector, records, roster)
    assert sorted(found) == ["a", "b", "c"]
    finding = found["a"]
    assert finding.score == pytest.approx(0.55 + 0.15)
    assert finding.evidence["cluster_size"] == 3 and finding.evidence["persistence"] == 1.0
    assert finding.evidence["shared"] == ["egress_ip", "gateway_mac", "wifi_bssid"]
    assert finding.evidence["claimed_locations_apart"] is True


def test_colocation_couple_weighs_little_and_same_employee_nothing() -> None:
    couple = run(ColocationDetector, _shared("a", 6) + _shared("b", 6), [roster_entry("a"), roster_entry("b")])
    assert couple["a"].score == pytest.approx(0.2)
    own = run(ColocationDetector, _shared("a", 6) + _shared("b", 6),
              [roster_entry("a", employee="E1"), roster_entry("b", employee="E1")])
    assert own == {}


def test_colocation_part_time_neighbours_are_discounted() -> None:
    # Three colleagues share a coworking network 4 of their 16 hours: persistence 0.25.
    records = []
    for device in "abc":
        records += _shared(device, 4, gateway="cowork") + _shared(device, 12, gateway=f"home-{device}", start=4 * 60,
                                                               ip=f"73.9.9.{ord(device)}")
    found = run(ColocationDetector, records, [roster_entry(d) for d in "abc"])
    assert found["a"].evidence["persistence"] == 0.25
    assert found["a"].score == pytest.approx(0.55 * 0.25 / 0.8, abs=1e-4)  # full weight needs 80 % persistence


def test_geo_mismatch_unclassified_network_is_weak_and_needs_an_asn() -> None:
    known = [make_record("d1", 5 * k, geo={"network_kind": "unknown", "asn_org": "Tiny ISP"}) for k in range(4)]
    finding = run(GeoMismatchDetector, known, [roster_entry("d1")])["d1"]
    assert finding.score == pytest.approx(0.1) and finding.evidence["unknown_networks"] == ["Tiny ISP"]
    no_asn = [make_record("d2", 5 * k, geo={"network_kind": "unknown", "asn": None}) for k in range(4)]
    assert run(GeoMismatchDetector, no_asn, [roster_entry("d2")]) == {}


@pytest.mark.parametrize(("domain", "verdict"), [pytest.param(None, "farm", id="direct-peer"),
                                                 pytest.param("net.anydesk.com", "clear", id="vendor-relay")])
def test_one_window_of_anydesk_180_ms_away_is_a_farm_unless_it_is_the_relay(domain, verdict) -> None:
    """What `farmwatch-agent verify` sees on its first window: the verdict, and the reason behind it."""
    [scored] = score(_outbound(180.0, domain), [roster_entry("d1")], [], NOW)
    assert scored.verdict == verdict
    assert any(f.detector == "session_distance" for f in scored.findings) == (verdict == "farm")
