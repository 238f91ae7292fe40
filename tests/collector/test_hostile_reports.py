"""Issue 15: one hostile device (with a valid token) must not break the fleet. Real collector process.

Each hostile report is refused with a 422 naming the field and leaves the store untouched; data
that breaks the detectors anyway (stored by an older collector, written here straight into the
database) costs only its own device's verdict, and the failed run shows in /metrics.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from collector_helpers import auth, poison, report_for, snapshot, wire_time
from collector_process import RunningCollector

from farmwatch.contract import INT_LIMIT

pytestmark = pytest.mark.slow


def post(collector: RunningCollector, token: object, body: bytes) -> httpx.Response:
    return httpx.post(f"{collector.url}/api/v1/reports", content=body,
                      headers={**auth(token), "Content-Type": "application/json"}, timeout=30)


def raw(report: dict[str, Any]) -> bytes:
    return json.dumps(report, allow_nan=True).encode()


def metric(collector: RunningCollector, name: str) -> float:
    for line in httpx.get(f"{collector.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


HOSTILE = [
    pytest.param({"window_end": "2262-04-12T00:00:00Z"}, "window_end", id="window_end-past-pandas-range"),
    pytest.param({"window_end": "9999-12-31T23:30:00-05:00"}, "window_end", id="window_end-without-utc-form"),
    pytest.param({"window_start": "1970-01-01T00:00:00Z"}, "window_start", id="window_start-1970"),
    pytest.param({"window_start": "2026-10-02T08:36:00Z"}, "window_end", id="window_end-before-start"),
    pytest.param({"seq": 2**63}, "seq", id="seq-2^63"),
    pytest.param({"seq": 2**64 + 5}, "seq", id="seq-past-64-bits"),
    pytest.param({"agent": {"version": "1", "os": "linux", "os_version": "6", "hostname": "a\x00b"}}, "agent.hostname",
                 id="NUL-in-hostname"),
    pytest.param({"comment": {"deep": [1, 2**70]}}, "comment", id="unknown-field-huge-int"),
    pytest.param({"comment": "x\x00"}, "comment", id="unknown-field-NUL"),
]


@pytest.mark.parametrize(("changes", "field"), HOSTILE)
def test_hostile_values_get_422_naming_the_field_and_store_nothing(
    collector: RunningCollector, changes: dict[str, Any], field: str
) -> None:
    device = collector.enrol()
    before = snapshot(collector.db_path)
    report = {**report_for(str(device["device_id"]), 1), **changes}
    answer = post(collector, device["token"], raw(report))
    assert answer.status_code == 422, answer.text
    assert [error["field"] for error in answer.json()["errors"]] == [field]
    assert snapshot(collector.db_path) == before


@pytest.mark.parametrize("token", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused_not_stored_as_null(collector: RunningCollector, token: str) -> None:
    device = collector.enrol()
    body = raw(report_for(str(device["device_id"]), 1)).replace(b'"active_seconds": 121.5', f'"active_seconds": {token}'.encode())
    assert token.encode() in body
    answer = post(collector, device["token"], body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "input.active_seconds"
    assert snapshot(collector.db_path)["reports"] == []


def test_a_spool_file_nested_deeply_is_a_422_not_a_crash(collector: RunningCollector) -> None:
    device = collector.enrol()
    body = raw(report_for(str(device["device_id"]), 1))[:-1] + b', "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = post(collector, device["token"], body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "(body)"


def test_clock_skew_is_bounded_and_recorded(collector_factory: Any) -> None:
    collector = collector_factory("[limits]\nmax_clock_skew_seconds = 3600\n")
    device = collector.enrol()
    token, device_id = device["token"], str(device["device_id"])
    now = datetime.now(timezone.utc)
    ahead = report_for(device_id, 1, window_start=wire_time(now), window_end=wire_time(now + timedelta(minutes=30)))
    assert post(collector, token, raw(ahead)).status_code == 202
    too_far = report_for(device_id, 2, window_start=wire_time(now), window_end=wire_time(now + timedelta(hours=2)))
    refused = post(collector, token, raw(too_far))
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "window_end", refused.text
    assert "clock ahead" in refused.json()["errors"][0]["message"]
    exported = collector.cli("export", "--db", collector.db_url)
    [record] = [json.loads(line) for line in exported.stdout.splitlines()]
    assert 1790 <= record["clock_skew_seconds"] <= 1800  # window_end 30 min ahead of receipt


def test_next_seq_after_the_largest_seq_fits_and_is_refused_by_name(collector: RunningCollector) -> None:
    device = collector.enrol()
    assert post(collector, device["token"], raw(report_for(str(device["device_id"]), INT_LIMIT))).status_code == 202
    again = collector.enrol()
    assert again["next_seq"] == INT_LIMIT + 1 < 2**63
    answer = post(collector, again["token"], raw(report_for(str(device["device_id"]), int(again["next_seq"]))))
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "seq", answer.text


def test_a_device_whose_records_break_scoring_costs_only_its_own_verdict(collector: RunningCollector) -> None:
    now = datetime.now(timezone.utc)
    window = {"window_start": wire_time(now - timedelta(minutes=5)), "window_end": wire_time(now)}
    healthy = [collector.enrol(hardware_id=f"hw-good-{n}", hostname=f"good-{n}") for n in range(3)]
    hostile = collector.enrol(hardware_id="hw-hostile", hostname="hostile")
    for device in [*healthy, hostile]:
        answer = post(collector, device["token"], raw(report_for(str(device["device_id"]), 1, **window)))
        assert answer.status_code == 202, answer.text
    poison(collector, str(hostile["device_id"]), 2)

    listed = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token), timeout=300)
    assert listed.status_code == 200, listed.text
    rows = {row["device_id"]: row for row in listed.json()}
    assert rows[str(hostile["device_id"])]["verdict"] == "review"
    assert all(rows[str(d["device_id"])]["verdict"] is not None for d in healthy)
    assert not any(row["stale"] for row in rows.values()), rows

    shown = httpx.get(f"{collector.url}/api/v1/devices/{hostile['device_id']}", headers=auth(collector.analyst_token))
    # Judged on its good report as before, plus its refused one as its own error evidence.
    [finding] = [f for f in shown.json()["findings"] if f["detector"] == "scoring_error"]
    # Refused by the reducer, naming the field: the window never reached the detectors.
    assert "report.window_end '2262-04-12T00:00:00Z'" in finding["evidence"]["error"], finding
    for device in healthy:  # they share the hostile device's network, so they were scored beside it
        detail = httpx.get(f"{collector.url}/api/v1/devices/{device['device_id']}", headers=auth(collector.analyst_token))
        assert "scoring_error" not in {f["detector"] for f in detail.json()["findings"]}, detail.text
        mine = httpx.post(f"{collector.url}/api/v1/verify", json={"seconds": 1}, headers=auth(device["token"]))
        assert mine.status_code == 200, mine.text
    assert metric(collector, "farmwatch_scoring_device_errors_total") >= 1
    assert metric(collector, "farmwatch_scoring_failures_total") == 0
    assert metric(collector, "farmwatch_scoring_last_success_timestamp_seconds") >= time.time() - 600


def test_a_failed_run_is_counted_and_the_api_answers_with_stale_verdicts(collector: RunningCollector) -> None:
    device = collector.enrol()
    device_id, token = str(device["device_id"]), device["token"]
    assert post(collector, token, raw(report_for(device_id, 1))).status_code == 202
    first = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token), timeout=300)
    assert first.status_code == 200 and first.json()[0]["stale"] is False
    # Stored fleet baselines no run can read: a run reads them before it claims any device, so no
    # device is to blame (a bad roster or anchor row is read per batch, where isolation looks for a device to blame).
    with sqlite3.connect(collector.db_path) as db:
        assert db.execute("UPDATE fleet_baselines SET body = 'not json'").rowcount == 1
    assert post(collector, token, raw(report_for(device_id, 2))).status_code == 202

    listed = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token), timeout=300)
    assert listed.status_code == 200, listed.text
    [row] = listed.json()
    assert row["stale"] is True and row["verdict"] == first.json()[0]["verdict"]
    shown = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=auth(collector.analyst_token))
    assert shown.status_code == 200 and shown.json()["stale"] is True
    assert metric(collector, "farmwatch_scoring_failures_total") >= 2
    assert "scoring run failed" in collector.log()


def test_unknown_paths_and_methods_answer_the_documented_error_body(collector: RunningCollector) -> None:
    missing = httpx.get(f"{collector.url}/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"errors": [{"field": "(path)", "message": "Not Found"}]}
    wrong = httpx.get(f"{collector.url}/api/v1/reports")
    assert wrong.status_code == 405
    assert wrong.json() == {"errors": [{"field": "(method)", "message": "Method Not Allowed"}]}
    assert wrong.headers["allow"] == "POST"
    nul = httpx.get(f"{collector.url}/api/v1/devices/a%00b", headers=auth(collector.analyst_token))
    assert nul.status_code == 404 and nul.json()["errors"][0]["field"] == "device_id"


def test_verify_gives_a_device_token_the_verdict_and_an_analyst_the_reasons(collector: RunningCollector) -> None:
    device = collector.enrol()
    now = datetime.now(timezone.utc)
    report = report_for(str(device["device_id"]), 1, window_start=wire_time(now - timedelta(minutes=5)), window_end=wire_time(now))
    assert post(collector, device["token"], raw(report)).status_code == 202
    analyst = httpx.get(f"{collector.url}/api/v1/devices/{device['device_id']}", headers=auth(collector.analyst_token),
                        timeout=300).json()
    assert analyst["findings"], "the fixture report (RustDesk with a live peer) should give the analyst a reason"
    own = httpx.post(f"{collector.url}/api/v1/verify", json={"seconds": 5}, headers=auth(device["token"]), timeout=300)
    assert own.status_code == 200, own.text
    answer = own.json()
    assert answer["verdict"] == analyst["verdict"]
    assert answer["findings"] == [] and answer["findings_withheld"] is True
    assert answer["risk"] in (0.0, 0.5, 0.8) and "enrolments" not in answer
    assert not any(f["summary"] in own.text for f in analyst["findings"])
