"""What a collector process remembers to answer reports early (farmwatch/collector/admission.py), and that
the write still decides: a token revoked while remembered stores nothing (401), a device whose quota
a commit found spent is refused before its body is read (429 even for a body that would not parse)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import auth, report_for, snapshot, wire_time
from collector_process import DEFAULT_CONFIG, RunningCollector
from test_ingest_rules import served

from farmwatch.collector.admission import SpentQuotas, TokenMemory
from farmwatch.collector.app import create_app
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.storage import Storage

T0 = datetime(2026, 11, 28, 9, 40, tzinfo=timezone.utc)


def test_a_token_is_remembered_for_its_ttl_and_forgotten_with_its_device() -> None:
    now = [100.0]
    memory = TokenMemory(ttl=60, clock=lambda: now[0])
    memory.remember("sha-a", "dev-a")
    memory.remember("sha-b", "dev-b")
    assert memory.device("sha-a") == "dev-a" and memory.device("sha-x") is None
    now[0] += 59.9
    assert memory.device("sha-a") == "dev-a"
    now[0] += 0.2
    assert memory.device("sha-a") is None  # past its ttl: the database is asked again
    memory.remember("sha-b2", "dev-b")
    memory.forget_device("dev-b")
    assert memory.device("sha-b") is None and memory.device("sha-b2") is None


def test_a_token_is_remembered_across_agents_report_intervals() -> None:
    """By default a token outlives several of an agent's 300-s report intervals, so a report does not
    cost a token query each (the write re-checks the token at its commit)."""
    now = [100.0]
    memory = TokenMemory(clock=lambda: now[0])
    memory.remember("sha-a", "dev-a")
    for _ in range(11):
        now[0] += 300
        assert memory.device("sha-a") == "dev-a"


def test_a_spent_quota_is_remembered_until_it_refills_or_a_commit_finds_room() -> None:
    spent = SpentQuotas()
    assert spent.wait("dev-a", T0) is None
    spent.spent("dev-a", T0, 1200)  # until 10:00
    assert spent.wait("dev-a", T0 + timedelta(minutes=5)) == 900
    assert spent.wait("dev-b", T0) is None  # one device's quota is its own
    assert spent.wait("dev-a", T0 + timedelta(minutes=20)) is None  # refilled
    spent.spent("dev-a", T0, 1200)
    spent.spent("dev-a", T0, None)  # a later commit found room (e.g. another period began)
    assert spent.wait("dev-a", T0) is None


def post(collector: RunningCollector, token: object, body: bytes) -> httpx.Response:
    return httpx.post(f"{collector.url}/api/v1/reports", content=body,
                      headers={**auth(token), "Content-Type": "application/json"}, timeout=30)


def recent(device_id: str, seq: int) -> bytes:
    now = datetime.now(timezone.utc)
    report: dict[str, Any] = report_for(device_id, seq, window_start=wire_time(now - timedelta(minutes=5)),
                                        window_end=wire_time(now))
    return json.dumps(report).encode()


@pytest.mark.slow
def test_a_token_revoked_while_remembered_stores_nothing(collector: RunningCollector) -> None:
    device = collector.enrol()
    device_id = str(device["device_id"])
    assert post(collector, device["token"], recent(device_id, 1)).status_code == 202  # the token is remembered now
    assert collector.cli("devices", "revoke", "--db", collector.db_url, device_id).returncode == 0  # another process
    before = snapshot(collector.db_path)["reports"]
    refused = post(collector, device["token"], recent(device_id, 2))
    assert refused.status_code == 401, refused.text
    assert refused.json()["errors"][0]["field"] == "Authorization"
    assert snapshot(collector.db_path)["reports"] == before


@pytest.mark.slow
def test_a_device_over_its_quota_is_refused_before_its_body_is_read(collector_factory: Any) -> None:
    collector = collector_factory(DEFAULT_CONFIG + "[limits]\nreports_per_device_per_hour = 2\n")
    device = collector.enrol()
    device_id = str(device["device_id"])
    assert [post(collector, device["token"], recent(device_id, seq)).status_code for seq in (1, 2)] == [202, 202]
    unreadable = post(collector, device["token"], b"{not json")  # would be 422 if it were parsed
    assert unreadable.status_code == 429, unreadable.text
    assert 0 < int(unreadable.headers["Retry-After"]) <= 3600
    assert post(collector, device["token"], recent(device_id, 2)).status_code == 429  # an identical resend waits too
    other = collector.enrol(hardware_id="hw-other")
    assert post(collector, other["token"], recent(str(other["device_id"]), 1)).status_code == 202


def test_a_token_issued_here_needs_no_query_before_its_reports(tmp_path: Path) -> None:
    """Enrolment and rotation remember the token they issue (a new device's first report costs no
    token query); rotation forgets the old one, which is then refused (401)."""
    storage = Storage.open(f"sqlite:///{tmp_path / 'admission.db'}")
    asked: list[str] = []
    query = storage.device_of_token

    def counted(token: str) -> str | None:
        asked.append(token)
        return query(token)

    storage.device_of_token = counted  # type: ignore[method-assign]
    secret = "e" * 20
    with served(create_app(storage, CollectorConfig(enroll_secret=secret, analyst_token="a" * 20),
                           background_scoring=False)) as client:
        enrolled = client.post("/api/v1/enroll", json={"enroll_secret": secret, "hostname": "h", "hardware_id": "hw-a"}).json()
        device_id, first = enrolled["device_id"], enrolled["token"]

        def report(token: str, seq: int) -> httpx.Response:
            return client.post("/api/v1/reports", content=recent(device_id, seq),
                               headers={**auth(token), "Content-Type": "application/json"})

        assert report(first, 1).status_code == 202
        assert asked == []
        second = client.post("/api/v1/token", headers=auth(first)).json()["token"]  # asks the database itself
        asked.clear()
        assert report(second, 2).status_code == 202
        assert asked == []
        refused = report(first, 3)
        assert refused.status_code == 401 and asked == [first]
    storage.close()
