"""The collector's one periodic-worker base (farmwatch.collector.periodic): start, stop that lets a
step finish, the wait between steps, and a failing step logged and counted without ending the thread.
The reducer, the retention job and the scorer run on it with their own thread names and metrics."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.periodic import PeriodicWorker
from farmwatch.collector.retention import RetentionJob, RetentionSettings
from farmwatch.collector.rollups import Reducer
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage

WAIT = 60.0  # generous: how long a test waits for the thread, never a measured duration


class Stepper(PeriodicWorker):
    """Fails its first step, then counts steps; ``gate`` holds a step in progress when cleared."""

    def __init__(self, failures: Counter | None) -> None:
        super().__init__("test-stepper", 0.001, "stepping failed; retrying", failures)
        self.steps = 0
        self.delays: list[float | None] = []
        self.gate = threading.Event()
        self.gate.set()
        self.in_step = threading.Event()
        self.third = threading.Event()

    def step(self) -> None:
        self.in_step.set()
        self.gate.wait(WAIT)
        self.steps += 1
        if self.steps == 1:
            raise RuntimeError("the first step fails")
        if self.steps >= 3:
            self.third.set()

    def next_delay(self, last_step_seconds: float | None) -> float:
        self.delays.append(last_step_seconds)
        return super().next_delay(last_step_seconds)


def test_a_failing_step_is_logged_and_counted_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    failures = Counter("test_stepper_failures", "failed steps", registry=CollectorRegistry())
    worker = Stepper(failures)
    with caplog.at_level(logging.ERROR, logger=__name__):
        worker.start()
        try:
            assert worker.third.wait(WAIT)
        finally:
            worker.stop()
    assert failures._value.get() == 1
    [record] = [r for r in caplog.records if r.getMessage() == "stepping failed; retrying"]
    assert record.name == __name__ and record.exc_info is not None  # the worker's own logger, with the traceback
    assert worker.delays[0] is None and all(d is not None and d >= 0 for d in worker.delays[1:])


def test_stop_lets_a_step_in_progress_finish_and_start_runs_again() -> None:
    worker = Stepper(None)
    worker.gate.clear()
    worker.start()
    assert worker.in_step.wait(WAIT)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    for _ in range(int(WAIT / 0.01)):
        if worker.stopping:
            break
        time.sleep(0.01)
    assert worker.stopping and stopper.is_alive() and worker.steps == 0  # stop waits for the held step
    worker.gate.set()
    stopper.join(WAIT)
    assert not stopper.is_alive() and worker.stopping and worker.steps == 1
    done = worker.steps
    assert not any(t.name == "test-stepper" for t in threading.enumerate())

    worker.start()
    try:
        assert worker.third.wait(WAIT) and worker.steps > done
    finally:
        worker.stop()


def test_the_collector_workers_keep_their_threads_and_metrics(tmp_path: Path) -> None:
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    registry = CollectorRegistry()

    def clock() -> datetime:
        return datetime.now(timezone.utc)

    try:
        config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20)
        workers = {
            "farmwatch-reducer": Reducer(storage, clock, registry, lookback_hours=72),
            "farmwatch-retention": RetentionJob(storage, RetentionSettings(), registry, clock),
            "farmwatch-scorer": Scorer(storage, config, Metrics(registry, device_count=lambda: 0), clock),
        }
        for name, worker in workers.items():
            assert isinstance(worker, PeriodicWorker) and worker.name == name
        assert workers["farmwatch-reducer"].interval_seconds == 2.0
        assert workers["farmwatch-retention"].next_delay(None) == 0.0  # prunes as it starts
        assert workers["farmwatch-scorer"].interval_seconds == config.detection_interval_seconds
        assert workers["farmwatch-reducer"].failures is not None and workers["farmwatch-scorer"].failures is None
        for name in ("farmwatch_reduction_failures_total", "farmwatch_retention_failures_total"):
            assert registry.get_sample_value(name) == 0.0
    finally:
        storage.close()
