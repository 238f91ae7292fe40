"""A hostile device with a valid token, against a real collector on SQLite and on PostgreSQL.

Every input below was an attack or a bug somewhere (issue 15 found several): each must get a 4xx
(never a 5xx), and after each one the device's next valid report must still be acknowledged and
stored. PostgreSQL is where some inputs really differ (it refuses NUL in text, where SQLite keeps
it), so the whole battery runs on both; PostgreSQL needs root and its server binaries, else skipped.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy
from collector_helpers import auth, report_for
from collector_process import DEFAULT_CONFIG, RunningCollector
from tally import Tally

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Hostile:
    """One hostile request: where it goes and what it carries."""

    name: str
    path: str
    body: Callable[[str], bytes]  # device id -> request body
    headers: dict[str, str] | None = None
    method: str = "POST"
    credential: str = "device"  # device | analyst | none


def report(device_id: str, **changes: Any) -> dict[str, Any]:
    return {**report_for(device_id, 999_999), **changes}


def as_json(document: Any) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


def with_token(device_id: str, token: str, changes: dict[str, Any]) -> bytes:
    return as_json(report(device_id, **changes)).replace(b'"__TOKEN__"', token.encode())


ENROL = {"enroll_secret": "__SECRET__", "hostname": "h", "hardware_id": "hw-hostile-enrol"}
BATTERY = [
    Hostile("window_end in 2262 (past pandas' range)", "/api/v1/reports", lambda d: as_json(report(d, window_end="2262-04-12T00:00:00Z"))),
    Hostile("window_end with no UTC form", "/api/v1/reports", lambda d: as_json(report(d, window_end="9999-12-31T23:30:00-05:00"))),
    Hostile("window_end in 1970", "/api/v1/reports", lambda d: as_json(report(d, window_end="1970-01-01T00:00:00Z"))),
    Hostile("window_end before window_start", "/api/v1/reports",
            lambda d: as_json(report(d, window_start="2026-10-02T09:00:00Z"))),
    Hostile("seq 2^63", "/api/v1/reports", lambda d: as_json(report(d, seq=2**63))),
    Hostile("seq 2^64 + 1", "/api/v1/reports", lambda d: as_json(report(d, seq=2**64 + 1))),
    Hostile("seq 0", "/api/v1/reports", lambda d: as_json(report(d, seq=0))),
    Hostile("seq as text", "/api/v1/reports", lambda d: as_json(report(d, seq="7"))),
    Hostile("Infinity", "/api/v1/reports",
            lambda d: as_json(report(d)).replace(b'"active_seconds": 121.5', b'"active_seconds": Infinity')),
    Hostile("NaN", "/api/v1/reports", lambda d: as_json(report(d)).replace(b'"rtt_ms": 31.5', b'"rtt_ms": NaN')),
    Hostile("1e999 (overflows to infinity)", "/api/v1/reports",
            lambda d: as_json(report(d)).replace(b'"active_seconds": 121.5', b'"active_seconds": 1e999')),
    Hostile("NUL in a known text field", "/api/v1/reports",
            lambda d: as_json(report(d, agent={"version": "1", "os": "linux", "os_version": "6", "hostname": "a\x00b"}))),
    Hostile("NUL in an unknown field", "/api/v1/reports", lambda d: as_json(report(d, note="x\x00y"))),
    Hostile("NUL in an unknown key", "/api/v1/reports", lambda d: as_json(report(d, **{"k\x00": 1}))),
    Hostile("NUL in device_id", "/api/v1/reports", lambda d: as_json({**report(d), "device_id": d + "\x00"})),
    Hostile("lone surrogate", "/api/v1/reports", lambda d: as_json(report(d)).replace(b'"tp-anna"', b'"tp\\ud800anna"')),
    Hostile("unknown field with a 2^100 integer", "/api/v1/reports", lambda d: as_json(report(d, extra={"n": [2**100]}))),
    Hostile("nested 100,000 deep", "/api/v1/reports",
            lambda d: as_json(report(d))[:-1] + b', "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    Hostile("not JSON", "/api/v1/reports", lambda d: b"\x00\xff not json"),
    Hostile("a JSON array", "/api/v1/reports", lambda d: b"[1, 2, 3]"),
    Hostile("an empty body", "/api/v1/reports", lambda d: b""),
    Hostile("gzip bomb (10 MB of zeros)", "/api/v1/reports", lambda d: gzip.compress(b"0" * 10_000_000),
            {"Content-Encoding": "gzip"}),
    Hostile("broken gzip", "/api/v1/reports", lambda d: gzip.compress(as_json(report(d)))[:-9], {"Content-Encoding": "gzip"}),
    Hostile("unsupported Content-Encoding", "/api/v1/reports", lambda d: as_json(report(d)), {"Content-Encoding": "br"}),
    Hostile("2 MB body", "/api/v1/reports", lambda d: as_json(report(d, padding="x" * 2_000_000))),
    Hostile("another device's id", "/api/v1/reports", lambda d: as_json({**report(d), "device_id": "dev-someone-else"})),
    Hostile("no token", "/api/v1/reports", lambda d: as_json(report(d)), credential="none"),
    Hostile("NUL in the enrol hostname", "/api/v1/enroll", lambda d: as_json({**ENROL, "hostname": "a\x00b"}), credential="none"),
    Hostile("NUL in the enrol hardware id", "/api/v1/enroll", lambda d: as_json({**ENROL, "hardware_id": "a\x00b"}),
            credential="none"),
    Hostile("10,000-character hostname", "/api/v1/enroll", lambda d: as_json({**ENROL, "hostname": "h" * 10_000}),
            credential="none"),
    Hostile("verify for 2^63 seconds", "/api/v1/verify", lambda d: as_json({"seconds": 2**63})),
    Hostile("NUL in a device path", "/api/v1/devices/a%00b", lambda d: b"", method="GET", credential="analyst"),
    Hostile("a 300-character device path", "/api/v1/devices/" + "d" * 300, lambda d: b"", method="GET", credential="analyst"),
    Hostile("unknown path", "/api/v1/../../etc/passwd", lambda d: b"", method="GET", credential="none"),
    Hostile("wrong method", "/api/v1/reports", lambda d: b"", method="DELETE"),
]


def stored_seqs(database_url: str, device_id: str) -> list[int]:
    engine = sqlalchemy.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as db:
            rows = db.execute(sqlalchemy.text("SELECT seq FROM reports WHERE device_id = :d ORDER BY seq"), {"d": device_id})
            return [int(seq) for (seq,) in rows]
    finally:
        engine.dispose()


def run_battery(collector: RunningCollector, tally: Tally) -> None:
    device = collector.enrol()
    device_id, token = str(device["device_id"]), str(device["token"])
    credentials = {"device": auth(token), "analyst": auth(collector.analyst_token), "none": {}}
    acknowledged = []
    with httpx.Client(base_url=collector.url, timeout=60) as client:
        for seq, hostile in enumerate(BATTERY, start=1):
            body = hostile.body(device_id).replace(b"__SECRET__", collector.enroll_secret.encode())
            headers = {"Content-Type": "application/json", **credentials[hostile.credential], **(hostile.headers or {})}
            answer = client.request(hostile.method, hostile.path, content=body, headers=headers)
            tally.answer(hostile.name, answer.status_code)
            assert 400 <= answer.status_code < 500, f"{hostile.name}: {answer.status_code} {answer.text[:300]}"
            assert answer.json()["errors"], hostile.name
            valid = client.post("/api/v1/reports", content=as_json(report_for(device_id, seq)), headers=credentials["device"])
            tally.answer("a valid report after: " + hostile.name, valid.status_code)
            assert valid.status_code == 202, f"after {hostile.name}: {valid.status_code} {valid.text[:300]}"
            acknowledged.append(seq)
    stored = stored_seqs(collector.db_url, device_id)
    tally.acknowledged += len(acknowledged)
    tally.stored += len(stored)
    assert stored == acknowledged
    assert httpx.get(f"{collector.url}/api/v1/devices", headers=credentials["analyst"], timeout=300).status_code == 200


CONFIG = DEFAULT_CONFIG + "[limits]\nfailed_auth_per_address_per_minute = 1000\n"


def test_hostile_battery_on_sqlite(collector_factory: Callable[..., RunningCollector], tally: Tally) -> None:
    run_battery(collector_factory(CONFIG), tally)


@pytest.mark.root
def test_hostile_battery_on_postgresql(
    postgres: str, collector_factory: Callable[..., RunningCollector], tally: Tally
) -> None:
    run_battery(collector_factory(CONFIG, database=postgres), tally)


def test_floods_get_429_never_5xx(collector_factory: Callable[..., RunningCollector], tally: Tally) -> None:
    """The issue's floods: 1,000 wrong enrol secrets in a burst; one token posting ~1 MB reports."""
    collector = collector_factory(DEFAULT_CONFIG + "[limits]\nreport_bytes_per_device_per_day = 8388608\n")
    device = collector.enrol()
    device_id, token = str(device["device_id"]), str(device["token"])
    statuses = []
    with httpx.Client(base_url=collector.url, timeout=60) as client:
        for n in range(1000):
            answer = client.post("/api/v1/enroll", json={**ENROL, "enroll_secret": f"guess-{n:04d}-" + "x" * 16})
            tally.answer("a wrong enrol secret", answer.status_code)
            statuses.append(answer.status_code)
        assert statuses.count(401) <= 31 and statuses.count(429) >= 969  # 30 a minute, and the burst is shorter
        assert "retry-after" in answer.headers
        tally.faults["1,000 wrong enrol secrets in a burst"] += 1
        big = {"padding": "x" * 1_000_000}
        stored = 0
        for seq in range(1, 21):
            answer = client.post("/api/v1/reports", content=as_json(report_for(device_id, seq, **big)),
                                 headers={**auth(token), "Content-Type": "application/json"})
            tally.answer("a ~1 MB report", answer.status_code)
            assert answer.status_code in (202, 429), answer.text[:300]
            stored += answer.status_code == 202
        tally.faults["one token posting ~1 MB reports"] += 1
    assert 1 <= stored <= 8  # 8 MiB a day
    tally.acknowledged += stored
    tally.stored += len(stored_seqs(collector.db_url, device_id))
    assert stored_seqs(collector.db_url, device_id) == list(range(1, stored + 1))
