"""A full disk under the collector's SQLite database: 503 + Retry-After, a metric, /healthz degraded,
and every acknowledged report stored. A real 4 MB tmpfs (root only: mounting needs CAP_SYS_ADMIN),
a real collector process, a ballast file that takes the space and is then deleted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import auth, report_for, snapshot
from collector_process import DEFAULT_CONFIG, RunningCollector, free_port

pytestmark = [pytest.mark.slow, pytest.mark.root]


def metric(collector: RunningCollector, sample: str) -> float:
    for line in httpx.get(f"{collector.url}/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[1])
    raise AssertionError(f"{sample} is not in /metrics")


def post(collector: RunningCollector, token: object, report: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{collector.url}/api/v1/reports", content=json.dumps(report).encode(),
                      headers={**auth(token), "Content-Type": "application/json"}, timeout=30)


def test_a_full_disk_is_503_with_retry_after_and_nothing_acknowledged_is_lost(
    small_disk: Path, tmp_path: Path
) -> None:
    collector = RunningCollector(workdir=tmp_path / "collector", port=free_port(), config_text=DEFAULT_CONFIG,
                                 database=f"sqlite:///{small_disk / 'farmwatch.db'}").start()
    try:
        device = collector.enrol()
        device_id, token = str(device["device_id"]), device["token"]
        assert post(collector, token, report_for(device_id, 1)).status_code == 202
        ballast = small_disk / "ballast"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        ballast.write_bytes(b"\0" * max(0, free - 200_000))  # leave room for a few reports only

        acknowledged, answers = [1], []
        for seq in range(2, 200):
            answer = post(collector, token, report_for(device_id, seq, padding="x" * 20_000))
            answers.append(answer.status_code)
            if answer.status_code == 202:
                acknowledged.append(seq)
            else:
                break
        refused = answer
        assert refused.status_code == 503, (answers, refused.text)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["errors"][0]["field"] == "(server)" and "space" in refused.json()["errors"][0]["message"]
        health = httpx.get(f"{collector.url}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "degraded", health.text
        assert metric(collector, "farmwatch_store_full_refusals_total") >= 1
        assert metric(collector, "farmwatch_store_full") == 1
        assert metric(collector, 'farmwatch_reports_rejected_total{reason="unavailable"}') >= 1

        ballast.unlink()  # the operator frees space; the agent's retry now succeeds
        assert post(collector, token, report_for(device_id, seq, padding="x" * 20_000)).status_code == 202
        acknowledged.append(seq)
        assert httpx.get(f"{collector.url}/healthz").json() == {"status": "ok"}
        assert metric(collector, "farmwatch_store_full") == 0
    finally:
        collector.stop()
    stored = sorted(row[2] for row in snapshot(small_disk / "farmwatch.db")["reports"])
    assert stored == acknowledged
    print(f"\ndisk full: {len(acknowledged)} reports acknowledged, {len(stored)} stored; "
          f"answers before the disk filled: {answers}")
