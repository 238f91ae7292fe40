"""Many agents at once: concurrent ingest on SQLite loses nothing and never answers 5xx."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from collector_helpers import auth, report_for
from collector_process import RunningCollector

pytestmark = pytest.mark.slow
DEVICES = 8
REPORTS = 12


def test_concurrent_agents_and_analyst_reads(collector: RunningCollector) -> None:
    devices = [collector.enrol(hardware_id=f"hw-{n}", hostname=f"host-{n}") for n in range(DEVICES)]

    def deliver(device: dict[str, object]) -> list[int]:
        with httpx.Client(base_url=collector.url, headers=auth(device["token"]), timeout=60) as client:
            codes = []
            for seq in range(1, REPORTS + 1):
                report = report_for(str(device["device_id"]), seq)
                codes.append(client.post("/api/v1/reports", json=report).status_code)
                # Every agent re-sends its previous report once, as after a lost acknowledgement.
                if seq > 1:
                    codes.append(client.post("/api/v1/reports", json=report_for(str(device["device_id"]), seq - 1)).status_code)
            return codes

    def analyst_reads() -> list[int]:
        with httpx.Client(base_url=collector.url, headers=auth(collector.analyst_token), timeout=60) as client:
            return [client.get("/api/v1/devices").status_code for _ in range(10)]

    with ThreadPoolExecutor(max_workers=DEVICES + 1) as pool:
        reads = pool.submit(analyst_reads)
        results = list(pool.map(deliver, devices))
    assert {code for codes in results for code in codes} == {202}
    assert set(reads.result()) == {200}

    exported = collector.cli("export", "--db", collector.db_url)
    pairs = [(r["report"]["device_id"], r["report"]["seq"]) for r in map(json.loads, exported.stdout.splitlines())]
    assert sorted(pairs) == sorted((str(d["device_id"]), s) for d in devices for s in range(1, REPORTS + 1))

    listed = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token)).json()
    assert len(listed) == DEVICES and all(row["verdict"] is not None for row in listed)
