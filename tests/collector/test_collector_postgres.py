"""The same collector on PostgreSQL (the scale-out store): a real server, a real collector process.

Proves the storage SQL is portable: enrolment, idempotent ingest, 409, verdicts, export, imports and
revocation all work unchanged against a throwaway PostgreSQL cluster.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from collector_helpers import auth, report_for
from collector_process import RunningCollector

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_collector_on_postgresql(postgres: str, collector_factory: Callable[..., RunningCollector], tmp_path: Path) -> None:
    collector = collector_factory(database=postgres)
    device = collector.enrol(hardware_id="hw-pg")
    device_id, token = str(device["device_id"]), device["token"]
    url = f"{collector.url}/api/v1/reports"

    assert httpx.post(url, json=report_for(device_id, 1), headers=auth(token)).status_code == 202
    assert httpx.post(url, json=report_for(device_id, 1), headers=auth(token)).status_code == 202
    assert httpx.post(url, json=report_for(device_id, 1, window_end="2026-10-02T08:39:00Z"), headers=auth(token)).status_code == 409
    assert httpx.post(url, json={**report_for(device_id, 2), "seq": "2"}, headers=auth(token)).status_code == 422

    again = collector.enrol(hardware_id="hw-pg")
    assert (again["device_id"], again["next_seq"]) == (device_id, 2)
    assert httpx.post(url, json=report_for(device_id, 2), headers=auth(token)).status_code == 401

    roster = tmp_path / "roster.csv"
    roster.write_text("device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools\n"
                      f"{device_id},E-PG,DE,Berlin,52.5,13.4,Europe/Berlin,rustdesk\n")
    assert collector.cli("roster", "import", "--db", postgres, str(roster)).returncode == 0
    (row,) = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token)).json()
    assert row["employee_id"] == "E-PG" and row["verdict"] is not None

    exported = collector.cli("export", "--db", postgres)
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["report"]["seq"] for line in exported.stdout.splitlines()] == [1]

    revoked = collector.cli("devices", "revoke", "--db", postgres, device_id)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.post(url, json=report_for(device_id, 2), headers=auth(again["token"])).status_code == 401


def test_concurrent_ingest_on_postgresql(postgres: str, collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(database=postgres)
    devices = [collector.enrol(hardware_id=f"hw-pg-burst-{n}") for n in range(6)]

    def deliver(device: dict[str, object]) -> set[int]:
        with httpx.Client(base_url=collector.url, headers=auth(device["token"]), timeout=60) as client:
            return {client.post("/api/v1/reports", json=report_for(str(device["device_id"]), seq)).status_code
                    for seq in (1, 2, 3, 3, 4)}

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert set().union(*pool.map(deliver, devices)) == {202}
    burst = {str(d["device_id"]) for d in devices}
    exported = [json.loads(line)["report"] for line in collector.cli("export", "--db", postgres).stdout.splitlines()]
    assert sorted((r["device_id"], r["seq"]) for r in exported if r["device_id"] in burst) == sorted(
        (device, seq) for device in burst for seq in (1, 2, 3, 4)
    )


def test_replicas_started_together_on_an_empty_database_all_open(postgres: str) -> None:
    """Four collectors opening one empty database at the same moment all come up (no CREATE race)."""
    import sqlalchemy as sa

    from farmwatch.collector.storage import Storage

    admin = sa.create_engine(postgres.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text("CREATE DATABASE empty_for_race"))
    admin.dispose()
    empty = postgres.rsplit("/", 1)[0] + "/empty_for_race"
    barrier = threading.Barrier(4)

    def open_at_once() -> int:
        barrier.wait()
        storage = Storage.open(empty)
        try:
            return storage.device_count()
        finally:
            storage.close()

    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: open_at_once(), range(4)))
    assert counts == [0, 0, 0, 0]
