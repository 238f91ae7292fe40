"""Enrolment and report ingest against a real collector process over real HTTP.

After every refused request the whole store (all tables) is compared with a snapshot taken before it:
a refused request must leave nothing behind.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from collector_helpers import auth, report_for, snapshot
from collector_process import RunningCollector

from farmwatch.contract import Report, to_wire

pytestmark = pytest.mark.slow


def post_report(collector: RunningCollector, token: object, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, (bytes, Iterator)) else json.dumps(body).encode()
    return httpx.post(
        f"{collector.url}/api/v1/reports",
        content=content,
        headers={**auth(token), "Content-Type": "application/json", **headers},
        timeout=30,
    )


@pytest.fixture
def enrolled(collector: RunningCollector) -> tuple[RunningCollector, str, str]:
    """A running collector with one enrolled device that has stored report seq 1."""
    device = collector.enrol()
    answer = post_report(collector, device["token"], report_for(str(device["device_id"]), 1))
    assert answer.status_code == 202, answer.text
    return collector, str(device["device_id"]), str(device["token"])


def test_enrol_issues_a_token_stored_only_as_its_hash(collector: RunningCollector) -> None:
    device = collector.enrol(hardware_id="hw-abc")
    assert set(device) == {"device_id", "token", "next_seq"}
    assert device["next_seq"] == 1
    tables = snapshot(collector.db_path)
    assert [row[0] for row in tables["devices"]] == [device["device_id"]]
    assert len(tables["tokens"]) == 1
    stored_bytes = b"".join(p.read_bytes() for p in collector.db_path.parent.glob("farmwatch.db*"))
    assert str(device["token"]).encode() not in stored_bytes


def test_wrong_enrol_secret_is_refused_and_stores_nothing(collector: RunningCollector) -> None:
    before = snapshot(collector.db_path)
    answer = httpx.post(
        f"{collector.url}/api/v1/enroll",
        json={"enroll_secret": collector.enroll_secret + "x", "hostname": "h", "hardware_id": "hw-1"},
    )
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["field"] == "enroll_secret"
    assert snapshot(collector.db_path) == before


def test_enrol_with_missing_field_names_it(collector: RunningCollector) -> None:
    answer = httpx.post(f"{collector.url}/api/v1/enroll", json={"enroll_secret": collector.enroll_secret, "hostname": "h"})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "hardware_id", "message": "Field required"}]


def test_re_enrolment_keeps_the_id_revokes_the_old_token_and_resumes_seq(
    enrolled: tuple[RunningCollector, str, str],
) -> None:
    collector, device_id, old_token = enrolled
    again = collector.enrol()  # same default hardware id
    assert again["device_id"] == device_id
    assert again["next_seq"] == 2
    assert again["token"] != old_token
    assert post_report(collector, old_token, report_for(device_id, 2)).status_code == 401
    assert post_report(collector, again["token"], report_for(device_id, 2)).status_code == 202


def test_accepted_report_becomes_one_ingest_record(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, _token = enrolled
    exported = collector.cli("export", "--db", collector.db_url)
    assert exported.returncode == 0, exported.stderr
    (record,) = [json.loads(line) for line in exported.stdout.splitlines()]
    assert record["source_ip"] == "127.0.0.1"
    assert record["geo"] == {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}
    sent = report_for(device_id, 1)
    assert record["report"]["device_id"] == device_id
    # What was sent, plus the defaults of fields added to the contract since (e.g. a connection's domain).
    expected = to_wire(Report.model_validate_json(json.dumps(sent)))["remote_access"][0]["connections"]
    assert record["report"]["remote_access"][0]["connections"] == expected
    assert all(stored.items() >= sent_connection.items()
               for stored, sent_connection in zip(expected, sent["remote_access"][0]["connections"], strict=True))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({}, "no token", id="no-token"),
        pytest.param({"Authorization": "Bearer not-a-real-token"}, "unknown token", id="unknown-token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "wrong scheme", id="basic-auth"),
    ],
)
def test_report_without_a_valid_token_is_401(
    enrolled: tuple[RunningCollector, str, str], headers: dict[str, str], reason: str
) -> None:
    collector, device_id, _token = enrolled
    before = snapshot(collector.db_path)
    answer = httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device_id, 2), headers=headers)
    assert answer.status_code == 401, reason
    assert answer.headers["www-authenticate"] == "Bearer"
    assert snapshot(collector.db_path) == before


def test_revoked_token_is_401(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    revoked = collector.cli("devices", "revoke", "--db", collector.db_url, device_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 1 token(s)" in revoked.stdout
    before = snapshot(collector.db_path)
    assert post_report(collector, token, report_for(device_id, 2)).status_code == 401
    assert snapshot(collector.db_path) == before


def test_malformed_json_is_422_naming_the_body(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, _device_id, token = enrolled
    before = snapshot(collector.db_path)
    answer = post_report(collector, token, b'{"schema": "farmwatch.report/v1", "seq": 2,')
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert error["field"] == "(body)" and "JSON" in error["message"]
    assert snapshot(collector.db_path) == before


def _set_probe_rtt(report: dict[str, Any]) -> None:
    report["network"]["probes"][0]["rtt_min_ms"] = "9.1"


def _drop_agent(report: dict[str, Any]) -> None:
    del report["agent"]


def _bad_seq(report: dict[str, Any]) -> None:
    report["seq"] = "2"


def _negative_rtt(report: dict[str, Any]) -> None:
    report["remote_access"][0]["connections"][0]["min_rtt_ms"] = -3


def _naive_time(report: dict[str, Any]) -> None:
    report["window_end"] = "2026-10-02T08:40:00"


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        pytest.param(_bad_seq, "seq", id="seq-as-string"),
        pytest.param(_set_probe_rtt, "network.probes[0].rtt_min_ms", id="rtt-as-string"),
        pytest.param(_negative_rtt, "remote_access[0].connections[0].min_rtt_ms", id="negative-rtt"),
        pytest.param(_drop_agent, "agent", id="missing-agent"),
        pytest.param(_naive_time, "window_end", id="time-without-zone"),
    ],
)
def test_wrong_types_are_422_naming_the_field(enrolled: tuple[RunningCollector, str, str], spoil: Any, field: str) -> None:
    collector, device_id, token = enrolled
    report = report_for(device_id, 2)
    spoil(report)
    before = snapshot(collector.db_path)
    answer = post_report(collector, token, report)
    assert answer.status_code == 422
    assert field in [error["field"] for error in answer.json()["errors"]], answer.text
    assert snapshot(collector.db_path) == before


def _padded(device_id: str, size: int) -> bytes:
    """A valid report followed by whitespace (still valid JSON) until it is ``size`` bytes long."""
    body = json.dumps(report_for(device_id, 2)).encode()
    return body + b" " * (size - len(body))


def test_oversized_body_is_413(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    before = snapshot(collector.db_path)
    assert post_report(collector, token, _padded(device_id, 1_048_577)).status_code == 413
    assert snapshot(collector.db_path) == before


def test_oversized_chunked_body_without_length_is_413(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    body = _padded(device_id, 3_000_000)
    chunks = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    before = snapshot(collector.db_path)
    assert post_report(collector, token, chunks).status_code == 413
    assert snapshot(collector.db_path) == before


def test_gzip_bomb_is_413(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    bomb = gzip.compress(_padded(device_id, 64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1_048_576  # small on the wire: only the decompressed size can catch it
    before = snapshot(collector.db_path)
    answer = post_report(collector, token, bomb, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert "decompressed" in answer.json()["errors"][0]["message"]
    assert snapshot(collector.db_path) == before


def test_gzip_report_just_under_the_cap_is_accepted(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    body = gzip.compress(_padded(device_id, 1_048_576))
    assert post_report(collector, token, body, **{"Content-Encoding": "gzip"}).status_code == 202


def test_corrupt_gzip_is_422(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    body = gzip.compress(json.dumps(report_for(device_id, 2)).encode())[:-12]
    before = snapshot(collector.db_path)
    answer = post_report(collector, token, body, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 422 and "gzip" in answer.json()["errors"][0]["message"]
    assert snapshot(collector.db_path) == before


def test_report_for_another_device_is_403_naming_device_id(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, _device_id, token = enrolled
    other = collector.enrol(hardware_id="hw-other")
    before = snapshot(collector.db_path)
    answer = post_report(collector, token, report_for(str(other["device_id"]), 5))
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["field"] == "device_id"
    assert snapshot(collector.db_path) == before


def test_identical_resend_is_acknowledged_again_and_stored_once(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    before = snapshot(collector.db_path)
    # The same report spelt differently (indented, gzip) is still the same report.
    again = gzip.compress(json.dumps(report_for(device_id, 1), indent=4).encode())
    answer = post_report(collector, token, again, **{"Content-Encoding": "gzip"})
    assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
    assert snapshot(collector.db_path) == before


def test_different_report_reusing_a_seq_is_409(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    before = snapshot(collector.db_path)
    answer = post_report(collector, token, report_for(device_id, 1, window_end="2026-10-02T08:36:00Z"))
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["field"] == "seq"
    assert snapshot(collector.db_path) == before


def test_unknown_fields_are_kept(enrolled: tuple[RunningCollector, str, str]) -> None:
    collector, device_id, token = enrolled
    answer = post_report(collector, token, report_for(device_id, 2, battery={"percent": 80}))
    assert answer.status_code == 202
    exported = collector.cli("export", "--db", collector.db_url)
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert records[-1]["report"]["battery"] == {"percent": 80}
