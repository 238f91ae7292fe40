"""[limits]: 429 with Retry-After for floods and guessing, per source address and per device. Real
collector processes on loopback (several of them sharing one database for the per-device quota)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import auth, report_for, serve_refusal, snapshot
from collector_process import DEFAULT_CONFIG, RunningCollector

pytestmark = pytest.mark.slow


def enrol(collector: RunningCollector, secret: str, hardware_id: str = "hw-1") -> httpx.Response:
    return httpx.post(f"{collector.url}/api/v1/enroll",
                      json={"enroll_secret": secret, "hostname": "h", "hardware_id": hardware_id}, timeout=30)


def post(collector: RunningCollector, token: object, report: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{collector.url}/api/v1/reports", content=json.dumps(report).encode(),
                      headers={**auth(token), "Content-Type": "application/json"}, timeout=30)


def metric(collector: RunningCollector, sample: str) -> float:
    for line in httpx.get(f"{collector.url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    raise AssertionError(f"{sample} is not in /metrics")


def retry_after(answer: httpx.Response, at_most: float) -> int:
    assert answer.status_code == 429, answer.text
    assert answer.json()["errors"][0]["message"]
    seconds = int(answer.headers["retry-after"])
    assert 1 <= seconds <= at_most
    return seconds


def test_wrong_enrol_secrets_are_slowed_to_the_configured_rate(collector_factory: Any) -> None:
    collector = collector_factory(DEFAULT_CONFIG + "[limits]\nfailed_auth_per_address_per_minute = 5\n")
    answers = [enrol(collector, "wrong-secret-" + str(n)).status_code for n in range(5)]
    assert answers == [401] * 5
    refused = enrol(collector, "wrong-again")
    retry_after(refused, 60 / 5 + 1)
    assert refused.json()["errors"][0]["field"] == "(client)"
    # The address is blocked, not the secret: even the right one waits (a guesser learns nothing).
    retry_after(enrol(collector, collector.enroll_secret), 13)
    assert metric(collector, 'farmwatch_enrolments_total{result="rate_limited"}') == 2
    assert metric(collector, 'farmwatch_enrolments_total{result="refused"}') == 5
    assert snapshot(collector.db_path)["devices"] == []


def test_unknown_device_tokens_are_slowed_too(collector_factory: Any) -> None:
    collector = collector_factory(DEFAULT_CONFIG + "[limits]\nfailed_auth_per_address_per_minute = 3\n")
    device = collector.enrol()
    guesses = [post(collector, f"guess-{n}", report_for(str(device["device_id"]))).status_code for n in range(3)]
    assert guesses == [401] * 3
    retry_after(post(collector, "guess-4", report_for(str(device["device_id"]))), 21)
    analyst = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token))
    retry_after(analyst, 21)  # per address: the analyst on this address waits as well (README, Security)
    # ...but the device with a valid token behind the same address keeps reporting.
    assert post(collector, device["token"], report_for(str(device["device_id"]))).status_code == 202
    assert metric(collector, 'farmwatch_reports_rejected_total{reason="rate_limited"}') == 1


def test_enrolment_floods_from_one_address_get_429(collector_factory: Any) -> None:
    collector = collector_factory(DEFAULT_CONFIG + "[limits]\nenrolments_per_address_per_minute = 3\n")
    assert [enrol(collector, collector.enroll_secret, f"hw-{n}").status_code for n in range(3)] == [200] * 3
    retry_after(enrol(collector, collector.enroll_secret, "hw-4"), 21)
    assert len(snapshot(collector.db_path)["devices"]) == 3


def test_reports_per_device_per_hour_are_capped_in_the_database_for_every_replica(
    collector_factory: Any, tmp_path: Path
) -> None:
    config = DEFAULT_CONFIG + "[limits]\nreports_per_device_per_hour = 3\n"
    first = collector_factory(config, name="first")
    second = collector_factory(config, name="second", database=first.db_url)
    second.enroll_secret_file.write_text(first.enroll_secret)  # one company, one secret (read at start)
    device, other = first.enrol(), first.enrol(hardware_id="hw-other")
    device_id = str(device["device_id"])
    assert post(first, device["token"], report_for(device_id, 1)).status_code == 202
    assert post(second, device["token"], report_for(device_id, 2)).status_code == 202
    assert post(first, device["token"], report_for(device_id, 3)).status_code == 202
    retry_after(post(second, device["token"], report_for(device_id, 4)), 3600)
    retry_after(post(first, device["token"], report_for(device_id, 4)), 3600)
    assert post(second, other["token"], report_for(str(other["device_id"]), 1)).status_code == 202  # others unaffected
    stored = snapshot(first.db_path)["reports"]
    assert sorted((row[1], row[2]) for row in stored) == sorted(
        [(device_id, 1), (device_id, 2), (device_id, 3), (str(other["device_id"]), 1)])
    assert metric(second, 'farmwatch_reports_rejected_total{reason="quota"}') == 1


def test_report_bytes_per_device_per_day_are_capped(collector_factory: Any) -> None:
    size = len(json.dumps(report_for("dev-000000000000", 1, padding="x" * 6000)).encode())
    collector = collector_factory(DEFAULT_CONFIG + f"[limits]\nreport_bytes_per_device_per_day = {3 * size + size // 2}\n")
    device = collector.enrol()
    device_id = str(device["device_id"])
    padded = [report_for(device_id, seq, padding="x" * 6000) for seq in range(1, 5)]
    answers = [post(collector, device["token"], report) for report in padded]
    assert [a.status_code for a in answers[:3]] == [202, 202, 202]
    retry_after(answers[3], 86_400)
    assert len(snapshot(collector.db_path)["reports"]) == 3


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param("[limits]\nreports_per_hour = 5\n", "unknown key(s) reports_per_hour", id="unknown-key"),
        pytest.param("[limits]\nreports_per_device_per_hour = 0\n", "reports_per_device_per_hour: must be a positive integer",
                     id="zero"),
        pytest.param('[limits]\nmax_clock_skew_seconds = "1d"\n', "max_clock_skew_seconds: must be a positive integer",
                     id="text"),
    ],
)
def test_bad_limits_stop_serve_with_one_line(tmp_path: Path, table: str, expected: str) -> None:
    assert expected in serve_refusal(tmp_path, table)
