"""Analyst API, agent config, verify, /healthz and /metrics of a real collector process."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from collector_helpers import auth, report_for, serve_refusal
from collector_process import RunningCollector
from prometheus_client.parser import text_string_to_metric_families

from farmwatch.collector.egress import network_kinds

pytestmark = pytest.mark.slow


def samples(collector: RunningCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = httpx.get(f"{collector.url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_healthz(collector: RunningCollector) -> None:
    answer = httpx.get(f"{collector.url}/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_metrics_count_what_happened(collector: RunningCollector) -> None:
    device = collector.enrol()
    token = device["token"]
    url = f"{collector.url}/api/v1/reports"
    assert httpx.post(url, json=report_for(str(device["device_id"]), 1), headers=auth(token)).status_code == 202
    assert httpx.post(url, json=report_for(str(device["device_id"]), 1), headers=auth(token)).status_code == 202
    assert httpx.post(url, json={"seq": 2}, headers=auth(token)).status_code == 422
    assert httpx.post(url, json={"seq": 2}).status_code == 401
    httpx.post(f"{collector.url}/api/v1/enroll", json={"enroll_secret": "nope", "hostname": "h", "hardware_id": "x"})

    seen = samples(collector)
    assert seen[("farmwatch_reports_accepted_total", (("kind", "new"),))] == 1
    assert seen[("farmwatch_reports_accepted_total", (("kind", "resend"),))] == 1
    assert seen[("farmwatch_reports_rejected_total", (("reason", "invalid"),))] == 1
    assert seen[("farmwatch_reports_rejected_total", (("reason", "unauthorized"),))] == 1
    assert seen[("farmwatch_reports_rejected_total", (("reason", "conflict"),))] == 0
    assert seen[("farmwatch_enrolments_total", (("result", "new"),))] == 1
    assert seen[("farmwatch_enrolments_total", (("result", "refused"),))] == 1
    assert seen[("farmwatch_devices", ())] == 1
    assert seen[("farmwatch_ingest_latency_seconds_count", ())] == 4


def test_devices_api_requires_the_analyst_token(collector: RunningCollector) -> None:
    device = collector.enrol()
    for headers in ({}, auth("wrong"), auth(device["token"]), auth(collector.analyst_token + "x")):
        assert httpx.get(f"{collector.url}/api/v1/devices", headers=headers).status_code == 401
        assert httpx.get(f"{collector.url}/api/v1/devices/{device['device_id']}", headers=headers).status_code == 401
    assert httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token)).status_code == 200


def test_device_verdict_is_fresh_right_after_ingest(collector: RunningCollector, tmp_path: Path) -> None:
    device = collector.enrol(hostname="tp-anna")
    device_id = str(device["device_id"])
    roster = tmp_path / "roster.csv"
    roster.write_text(
        "device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools\n"
        f"{device_id},E-3310,DE,Berlin,52.52,13.40,Europe/Berlin,\n"
    )
    assert collector.cli("roster", "import", "--db", collector.db_url, str(roster)).returncode == 0
    analyst = auth(collector.analyst_token)

    listed = httpx.get(f"{collector.url}/api/v1/devices", headers=analyst).json()
    assert listed == [
        {"device_id": device_id, "employee_id": "E-3310", "hostname": "tp-anna", "last_seen": None,
         "risk": None, "verdict": None, "scored_at": None, "stale": False}
    ]
    assert httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst).status_code == 404

    sent = httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device_id, 1), headers=auth(device["token"]))
    assert sent.status_code == 202
    verdict = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst).json()
    assert verdict["device_id"] == device_id and verdict["employee_id"] == "E-3310"
    assert verdict["verdict"] in {"clear", "review", "farm"}
    # The fixture report holds an unapproved RustDesk with a live session: the detector must say so.
    assert any(f["detector"] == "remote_access" and f["evidence"].get("tool") == "rustdesk" for f in verdict["findings"])
    assert [e["renewal"] for e in verdict["enrolments"]] == [False]
    (row,) = httpx.get(f"{collector.url}/api/v1/devices", headers=analyst).json()
    assert row["risk"] == verdict["risk"] and row["verdict"] == verdict["verdict"] and row["stale"] is False
    assert row["scored_at"] == verdict["scored_at"] and verdict["stale"] is False
    assert row["last_seen"].endswith("Z")

    # Approving the tool in the roster changes the verdict at once, without a new report.
    roster.write_text(roster.read_text().replace("Europe/Berlin,", "Europe/Berlin,rustdesk"))
    assert collector.cli("roster", "import", "--db", collector.db_url, str(roster)).returncode == 0
    approved = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst).json()
    assert datetime.fromisoformat(approved["scored_at"]) > datetime.fromisoformat(verdict["scored_at"])
    assert all(f["evidence"].get("approved") is not False for f in approved["findings"])

    missing = httpx.get(f"{collector.url}/api/v1/devices/dev-nope", headers=analyst)
    assert missing.status_code == 404 and "not enrolled" in missing.json()["errors"][0]["message"]


def test_agent_config_carries_the_anchors(collector: RunningCollector, tmp_path: Path) -> None:
    device = collector.enrol()
    anchors = tmp_path / "anchors.csv"
    anchors.write_text("name,address,port,latitude,longitude\neu-frankfurt,198.51.100.40,443,50.11,8.68\n")
    assert collector.cli("anchors", "import", "--db", collector.db_url, str(anchors)).returncode == 0
    assert httpx.get(f"{collector.url}/api/v1/config").status_code == 401
    config = httpx.get(f"{collector.url}/api/v1/config", headers=auth(device["token"])).json()
    assert config == {
        "anchors": [{"name": "eu-frankfurt", "address": "198.51.100.40", "port": 443, "latitude": 50.11, "longitude": 8.68}],
        "interval_seconds": 300,
        "probe_options": {},
    }


def test_verify_returns_the_devices_own_verdict(collector: RunningCollector) -> None:
    device = collector.enrol()
    device_id, token = str(device["device_id"]), device["token"]
    url = f"{collector.url}/api/v1/verify"
    assert httpx.post(url, json={"seconds": 30}, headers=auth(token)).status_code == 404
    httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device_id, 1), headers=auth(token)).raise_for_status()
    assert httpx.post(url, json={"seconds": 30}).status_code == 401
    bad = httpx.post(url, json={"seconds": "30"}, headers=auth(token))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "seconds"
    answer = httpx.post(url, json={"seconds": 30}, headers=auth(token)).json()
    assert answer["device_id"] == device_id and answer["observed_seconds"] == 30


TRUSTING_LOOPBACK = """\
[collector]
trusted_proxies = ["127.0.0.0/8"]

[detection]
interval_seconds = 3600

[geo]
corporate_networks = ["198.51.100.0/24"]
"""


@pytest.mark.parametrize(
    ("forwarded", "source_ip", "country", "kind"),
    [
        pytest.param("8.8.8.8", "8.8.8.8", "US", "unknown", id="client-behind-proxy"),
        pytest.param("198.51.100.7, 127.0.0.5", "198.51.100.7", None, "corporate", id="two-proxies-corporate"),
        pytest.param("1.1.1.1, 8.8.8.8", "8.8.8.8", "US", "unknown", id="left-end-is-client-written"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    collector_factory: object, forwarded: str, source_ip: str, country: str | None, kind: str
) -> None:
    collector = collector_factory(TRUSTING_LOOPBACK)  # type: ignore[operator]
    device = collector.enrol()
    httpx.post(
        f"{collector.url}/api/v1/reports",
        json=report_for(str(device["device_id"]), 1),
        headers={**auth(device["token"]), "X-Forwarded-For": forwarded},
    ).raise_for_status()
    (record,) = [json.loads(line) for line in collector.cli("export", "--db", collector.db_url).stdout.splitlines()]
    assert record["source_ip"] == source_ip
    assert record["geo"]["country"] == country
    assert record["geo"]["network_kind"] == kind


def test_forwarded_for_from_an_untrusted_peer_is_ignored(collector: RunningCollector) -> None:
    device = collector.enrol()
    httpx.post(
        f"{collector.url}/api/v1/reports",
        json=report_for(str(device["device_id"]), 1),
        headers={**auth(device["token"]), "X-Forwarded-For": "8.8.8.8"},
    ).raise_for_status()
    (record,) = [json.loads(line) for line in collector.cli("export", "--db", collector.db_url).stdout.splitlines()]
    assert record["source_ip"] == "127.0.0.1"


def _mmdb(path: Path, database_type: str, networks: dict[str, dict[str, object]]) -> Path:
    """A small MaxMind-format file written with mmdb-writer (the real format the reader parses)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type)
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


def test_geo_from_configured_maxmind_databases(collector_factory: object, tmp_path: Path) -> None:
    city = _mmdb(tmp_path / "city.mmdb", "GeoLite2-City", {"203.0.113.0/24": {"country": {"iso_code": "KP"}}})
    asn = _mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "203.0.113.0/24": {"autonomous_system_number": 64496, "autonomous_system_organization": "Example Hosting"},
    })
    config = TRUSTING_LOOPBACK.replace("[geo]\n", f"[geo]\ncity_db = '{city}'\nasn_db = '{asn}'\n")
    collector = collector_factory(config)  # type: ignore[operator]
    device = collector.enrol()
    for seq, address in ((1, "203.0.113.50"), (2, "8.8.8.8")):
        httpx.post(
            f"{collector.url}/api/v1/reports",
            json=report_for(str(device["device_id"]), seq),
            headers={**auth(device["token"]), "X-Forwarded-For": address},
        ).raise_for_status()
    first, second = [json.loads(line)["geo"] for line in collector.cli("export", "--db", collector.db_url).stdout.splitlines()]
    assert first == {"country": "KP", "asn": 64496, "asn_org": "Example Hosting", "network_kind": "unknown"}
    # Outside both files: with a city database configured, its silence is the answer (no iptocc guess).
    assert second == {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}


def test_hosting_and_anonymiser_networks_are_named_by_their_asn(collector_factory: object, tmp_path: Path) -> None:
    """ASNs in collector/data/network_kinds.csv classify the egress; the company's own ranges win."""
    asn = _mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "203.0.113.0/25": {"autonomous_system_number": 14061, "autonomous_system_organization": "DIGITALOCEAN-ASN"},
        "203.0.113.128/25": {"autonomous_system_number": 53559, "autonomous_system_organization": "ANONYMIZER"},
        # the company's range (TRUSTING_LOOPBACK's corporate_networks), hosted at a listed cloud
        "198.51.100.0/24": {"autonomous_system_number": 14061, "autonomous_system_organization": "DIGITALOCEAN-ASN"},
        "192.0.2.0/24": {"autonomous_system_number": 7922, "autonomous_system_organization": "COMCAST-7922"},
    })
    config = TRUSTING_LOOPBACK.replace("[geo]\n", f"[geo]\nasn_db = '{asn}'\n")
    collector = collector_factory(config)  # type: ignore[operator]
    device = collector.enrol()
    for seq, address in enumerate(("203.0.113.10", "203.0.113.200", "198.51.100.7", "192.0.2.9"), start=1):
        httpx.post(
            f"{collector.url}/api/v1/reports",
            json=report_for(str(device["device_id"]), seq),
            headers={**auth(device["token"]), "X-Forwarded-For": address},
        ).raise_for_status()
    kinds = [json.loads(line)["geo"]["network_kind"] for line in collector.cli("export", "--db", collector.db_url).stdout.splitlines()]
    assert kinds == ["hosting", "vpn", "corporate", "unknown"]


def test_carrier_grade_nat_is_named_by_asn_or_by_shared_address_space(collector_factory: object, tmp_path: Path) -> None:
    """Issue 16: mobile carriers and Starlink by their ASN; an uncatalogued network whose laptop's
    gateway (the report) or source address is in RFC 6598 space is "cgnat"; the company's ranges and
    catalogued kinds stay what they are; an ordinary gateway leaves unknown unknown."""
    asn = _mmdb(tmp_path / "asn.mmdb", "GeoLite2-ASN", {
        "203.0.113.0/26": {"autonomous_system_number": 21928, "autonomous_system_organization": "T-MOBILE-AS21928"},
        "203.0.113.64/26": {"autonomous_system_number": 14593, "autonomous_system_organization": "SPACEX-STARLINK"},
        "203.0.113.128/25": {"autonomous_system_number": 14061, "autonomous_system_organization": "DIGITALOCEAN-ASN"},
        "192.0.2.0/24": {"autonomous_system_number": 64511, "autonomous_system_organization": "Small fixed wireless"},
    })
    config = TRUSTING_LOOPBACK.replace("[geo]\n", f"[geo]\nasn_db = '{asn}'\n")
    collector = collector_factory(config)  # type: ignore[operator]
    device = collector.enrol()
    sent = (("203.0.113.10", "192.168.12.1"), ("203.0.113.70", "192.168.1.1"), ("192.0.2.9", "100.72.0.1"),
            ("192.0.2.9", "192.168.0.1"), ("100.80.1.2", None), ("198.51.100.7", "100.72.0.1"),
            ("203.0.113.200", "100.72.0.1"))
    for seq, (address, gateway) in enumerate(sent, start=1):
        report = report_for(str(device["device_id"]), seq)
        report["network"]["gateway_ip"] = gateway
        httpx.post(
            f"{collector.url}/api/v1/reports", json=report,
            headers={**auth(device["token"]), "X-Forwarded-For": address},
        ).raise_for_status()
    kinds = [json.loads(line)["geo"]["network_kind"] for line in collector.cli("export", "--db", collector.db_url).stdout.splitlines()]
    assert kinds == ["mobile", "cgnat", "cgnat", "unknown", "cgnat", "corporate", "hosting"]


def test_the_network_kind_catalogue_is_well_formed() -> None:
    kinds = network_kinds()
    assert len(kinds) >= 40 and set(kinds.values()) == {"hosting", "vpn", "mobile", "cgnat"}
    assert kinds[16509] == "hosting"  # AMAZON-02
    assert kinds[21928] == "mobile" and kinds[14593] == "cgnat"


def test_unreadable_geo_database_stops_serve_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bogus.mmdb").write_bytes(b"not a database")
    message = serve_refusal(tmp_path, f"[geo]\nasn_db = '{tmp_path / 'bogus.mmdb'}'\n")
    assert message.startswith("farmwatch-collector: [geo] asn_db: cannot open")
