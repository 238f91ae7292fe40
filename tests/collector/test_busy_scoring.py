"""A fleet-wide scoring run can take tens of seconds: requests share one run and wait only so long.

The real-collector tests set ``refresh_wait_seconds`` to a microsecond, shorter than any scoring run
can be (it reads the database and fits a model), so every on-demand run outlasts the wait.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from collector_helpers import auth, report_for
from collector_process import DEFAULT_CONFIG, RunningCollector
from prometheus_client import CollectorRegistry
from test_scoring_state import store_report

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage

T0 = datetime(2026, 11, 28, 5, 0, tzinfo=timezone.utc)
IMPATIENT = DEFAULT_CONFIG.replace("refresh_wait_seconds = 300", "refresh_wait_seconds = 0.000001")


def _scorer(tmp_path: Path, wait: float) -> tuple[Storage, Scorer, Callable[[], float | None]]:
    storage = Storage.open(f"sqlite:///{tmp_path / 'busy.db'}")
    registry = CollectorRegistry()
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, refresh_wait_seconds=wait)
    scorer = Scorer(storage, config, Metrics(registry, lambda: 0), lambda: T0)
    storage.enrol(hardware_id="hw-1", hostname="h", source_ip="127.0.0.1", new_device_id="dev-1", token="t-1", now=T0)
    store_report(storage, "dev-1", 1, T0)
    return storage, scorer, lambda: registry.get_sample_value("farmwatch_scoring_duration_seconds_count")


def test_many_requests_for_a_stale_verdict_share_one_run(tmp_path: Path) -> None:
    storage, scorer, runs = _scorer(tmp_path, wait=300)
    answers: list[bool] = []
    try:
        threads = [threading.Thread(target=lambda: answers.append(scorer.refresh("dev-1"))) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [True] * 12
        assert runs() in (1.0, 2.0), "twelve requests may share at most one running and one queued run"
        assert storage.verdict("dev-1") is not None
    finally:
        scorer.stop()
        storage.close()


def test_a_request_waits_only_so_long_and_the_run_still_lands(tmp_path: Path) -> None:
    storage, scorer, runs = _scorer(tmp_path, wait=0.2)
    try:
        with scorer._lock:  # stands in for a long periodic run in progress
            assert scorer.refresh("dev-1") is False
            assert storage.verdict("dev-1") is None
        deadline = time.monotonic() + 120
        while storage.verdict("dev-1") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert storage.verdict("dev-1") is not None, "the run the request started must finish on its own"
        assert runs() == 1.0
        assert scorer.refresh("dev-1") is True and runs() == 1.0
    finally:
        scorer.stop()
        storage.close()


def _post(collector: RunningCollector, device: dict[str, object], seq: int) -> None:
    sent = httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device["device_id"], seq),
                      headers=auth(device["token"]))
    assert sent.status_code == 202, sent.text


def _until(ask: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool]) -> httpx.Response:
    deadline = time.monotonic() + 120
    while not done(answer := ask()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer


@pytest.mark.slow
def test_a_busy_collector_answers_at_once_and_says_what_is_stale(
    collector_factory: Callable[..., RunningCollector],
) -> None:
    collector = collector_factory(IMPATIENT)
    analyst = auth(collector.analyst_token)
    device = collector.enrol()
    _post(collector, device, 1)

    def show() -> httpx.Response:
        return httpx.get(f"{collector.url}/api/v1/devices/{device['device_id']}", headers=analyst)

    first = show()
    assert first.status_code == 503 and first.headers["Retry-After"] == "30"
    assert first.json()["errors"][0]["field"] == "device_id"
    assert "still being computed" in first.json()["errors"][0]["message"]
    scored = _until(show, lambda answer: answer.status_code == 200)
    assert scored.status_code == 200 and scored.json()["stale"] is False

    _post(collector, device, 2)
    (row,) = httpx.get(f"{collector.url}/api/v1/devices", headers=analyst).json()
    assert row["stale"] is True and row["verdict"] == scored.json()["verdict"]
    assert row["scored_at"] == scored.json()["scored_at"]
    shown = show().json()  # the run the list started may have ended by now; either way it must be said right
    assert shown["stale"] is (shown["scored_at"] == scored.json()["scored_at"])

    caught_up = _until(lambda: httpx.get(f"{collector.url}/api/v1/devices", headers=analyst),
                       lambda answer: answer.json()[0]["stale"] is False)
    assert caught_up.json()[0]["scored_at"] > scored.json()["scored_at"]


@pytest.mark.slow
def test_agent_verify_waits_for_a_busy_collector_to_score_its_report(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    collector = collector_factory(IMPATIENT)
    done = subprocess.run(
        [sys.executable, "-m", "farmwatch.agent.cli", "verify", "--collector", collector.url,
         "--enroll-secret-file", str(collector.enroll_secret_file), "--state-dir", str(tmp_path / "state"),
         "--seconds", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert "still scoring this report" in done.stderr
    (row,) = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token)).json()
    assert row["stale"] is False
    assert f"verdict: {row['verdict']} (risk {row['risk']:.2f})" in done.stdout
    assert done.returncode == {"clear": 0, "review": 2, "farm": 1}[row["verdict"]], done.stdout + done.stderr
