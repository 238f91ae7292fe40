"""A fleet-wide scoring run can take tens of seconds: requests share one run and wait only so long.

The real-collector test sets ``refresh_wait_seconds`` to a microsecond and holds the database's
write lock while it asks, so the run it starts cannot store its verdicts in time, however fast
scoring is. No test here depends on how fast a thread or process gets the CPU (they flaked at
load 10): each waits for the event it needs (a run entered, a run's result), and the real
collector's periodic scoring, which ticks on the wall clock's hour at the default config, is put
out of the tests' reach, so only the runs a test asks for score.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import pytest
from collector_helpers import auth, report_for
from collector_process import DEFAULT_CONFIG, RunningCollector
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_scoring_state import store_report

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.ingest import ingest_record, parse_report
from farmwatch.collector.storage import Storage
from farmwatch.collector.storage import reports as reports_table

T0 = datetime(2026, 11, 28, 5, 0, tzinfo=timezone.utc)
# The periodic run ticks at multiples of interval_seconds since the epoch: at 3600 a test running
# across a full hour saw a run it did not ask for score a report it expected stale. 10**9 s puts
# the next tick in 2033.
IMPATIENT = DEFAULT_CONFIG.replace("refresh_wait_seconds = 300", "refresh_wait_seconds = 0.000001").replace(
    "interval_seconds = 3600", "interval_seconds = 1000000000")


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


def test_a_queued_run_with_nothing_left_to_score_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage, scorer, runs = _scorer(tmp_path, wait=300)
    entered = threading.Event()
    run_if_stale = scorer._run_if_stale

    def run_entered() -> int:
        entered.set()
        return run_if_stale()

    monkeypatch.setattr(scorer, "_run_if_stale", run_entered)
    try:
        with scorer._lock:  # the first run waits here, so the second request queues behind it
            first = scorer._coalesced_run(None)
            # Only a started run makes the next request queue another; one not yet taken by the worker
            # thread (a loaded machine) is shared instead, so wait until the first is under way.
            assert entered.wait(timeout=120), "the first run never started"
            second = scorer._coalesced_run(None)
            assert first is not None and second is not None and second is not first
            assert scorer.metrics.registry.get_sample_value("farmwatch_scoring_runs_pending") == 2.0
        assert (first.result(timeout=120), second.result(timeout=120)) == (1, 0)  # the second found nothing stale
        assert runs() == 1.0
        # A run's done-callbacks (the gauge's decrement) run in the one worker thread just after its
        # result is set, so a no-op queued behind it returns only once they have run.
        assert scorer._on_demand is not None
        scorer._on_demand.submit(lambda: None).result(timeout=120)
        assert scorer.metrics.registry.get_sample_value("farmwatch_scoring_runs_pending") == 0.0
    finally:
        scorer.stop()
        storage.close()


def test_a_request_waits_only_so_long_and_the_run_still_lands(tmp_path: Path) -> None:
    storage, scorer, runs = _scorer(tmp_path, wait=0.2)
    try:
        with scorer._lock:  # stands in for a long periodic run in progress
            assert scorer.refresh("dev-1") is False
            assert storage.verdict("dev-1") is None
            started = scorer._queued
        assert started is not None
        # The run's own result, not its verdict appearing: the verdict is stored before the run is
        # counted in farmwatch_scoring_duration_seconds, so polling for it raced the count.
        assert started.result(timeout=120) == 1, "the run the request started must finish on its own"
        assert storage.verdict("dev-1") is not None
        assert runs() == 1.0
        assert scorer.refresh("dev-1") is True and runs() == 1.0
    finally:
        scorer.stop()
        storage.close()


def _post(collector: RunningCollector, device: dict[str, object], seq: int) -> None:
    sent = httpx.post(f"{collector.url}/api/v1/reports", json=report_for(str(device["device_id"]), seq),
                      headers=auth(device["token"]))
    assert sent.status_code == 202, sent.text


def _until(ask: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool]) -> httpx.Response:
    deadline = time.monotonic() + 120
    while not done(answer := ask()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return answer


@contextmanager
def writes_held(db_path: Path) -> Iterator[None]:
    """Hold the database's write lock, as a long write elsewhere would: a scoring run started
    meanwhile reads and scores but cannot store its verdicts until the block ends (the collector
    waits for the lock up to its busy_timeout, 10 s)."""
    db = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


BALLAST_RECORDS = 20_000


def add_ballast(collector: RunningCollector, count: int) -> str:
    """Store ``count`` reports of another device straight into the collector's database (one
    transaction), so that a scoring run, which reads the whole lookback, takes seconds."""
    device = collector.enrol(hardware_id="hw-ballast", hostname="ballast")
    storage = Storage.open(collector.db_url)
    now = datetime.now(timezone.utc)
    geo = {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}
    report = parse_report(json.dumps(report_for(str(device["device_id"]), 1)).encode())
    rows = []
    for seq in range(1, count + 1):
        record = ingest_record(report.model_copy(update={"seq": seq}), now, "127.0.0.1", geo)
        rows.append({"device_id": device["device_id"], "seq": seq, "digest": f"{seq:064x}", "received_at": now,
                     "record": orjson.dumps(record).decode()})
    try:
        with storage.engine.begin() as tx:
            tx.execute(reports_table.insert(), rows)
    finally:
        storage.close()
    return str(device["device_id"])


def pending_runs(exposition: str) -> float:
    [value] = [sample.value for family in text_string_to_metric_families(exposition) for sample in family.samples
               if sample.name == "farmwatch_scoring_runs_pending"]
    return value


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

    with writes_held(collector.db_path):  # the run cannot store its verdict: it outlasts the wait
        first = show()
    assert first.status_code == 503 and first.headers["Retry-After"] == "30"
    assert first.json()["errors"][0]["field"] == "device_id"
    assert "still being computed" in first.json()["errors"][0]["message"]
    # The first 200 may still say stale: an answer's freshness is asked before its verdict is read,
    # and the run can store the verdict in between (conservative: it says stale, never the reverse).
    scored = _until(show, lambda answer: answer.status_code == 200 and answer.json()["stale"] is False)
    assert scored.status_code == 200 and scored.json()["stale"] is False
    # The polling above may have queued one more run; let it pass (it finds nothing stale and
    # skips), or it could pick up the next report before the list below is asked.
    idle = _until(lambda: httpx.get(f"{collector.url}/metrics"), lambda answer: pending_runs(answer.text) == 0)
    assert pending_runs(idle.text) == 0

    _post(collector, device, 2)
    with writes_held(collector.db_path):
        (row,) = httpx.get(f"{collector.url}/api/v1/devices", headers=analyst).json()
        shown = show().json()
    assert row["stale"] is True and row["verdict"] == scored.json()["verdict"]
    assert row["scored_at"] == scored.json()["scored_at"]
    assert shown["stale"] is True and shown["scored_at"] == scored.json()["scored_at"]

    caught_up = _until(lambda: httpx.get(f"{collector.url}/api/v1/devices", headers=analyst),
                       lambda answer: answer.json()[0]["stale"] is False)
    assert caught_up.json()[0]["scored_at"] > scored.json()["scored_at"]


@pytest.mark.slow
def test_agent_verify_waits_for_a_busy_collector_to_score_its_report(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    collector = collector_factory(IMPATIENT)
    ballast = add_ballast(collector, BALLAST_RECORDS)  # every scoring run now takes a second or more
    done = subprocess.run(
        [sys.executable, "-m", "farmwatch.agent.cli", "verify", "--collector", collector.url,
         "--enroll-secret-file", str(collector.enroll_secret_file), "--state-dir", str(tmp_path / "state"),
         "--seconds", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert "still scoring this report" in done.stderr
    rows = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token)).json()
    (row,) = [row for row in rows if row["device_id"] != ballast]
    assert row["stale"] is False
    assert f"verdict: {row['verdict']} (risk {row['risk']:.2f})" in done.stdout
    assert done.returncode == {"clear": 0, "review": 2, "farm": 1}[row["verdict"]], done.stdout + done.stderr
