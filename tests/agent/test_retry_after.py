"""The collector's Retry-After (429 over quota, 503 while the store cannot write) is honoured.

The ``run`` test drives a real collector whose ``[limits]`` let a device store one report per hour:
the next report is answered 429 with ``Retry-After`` (seconds to the next UTC hour), and the
agent must keep every later window in its spool, quarantine nothing and not ask again before the
wait it was given (bounded by MAX_RETRY_AFTER_SECONDS).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from agent_procs import BIN, export
from collector_process import DEFAULT_CONFIG, RunningCollector

from farmwatch.agent.delivery.http_client import retry_after_seconds
from farmwatch.agent.service import MAX_RETRY_AFTER_SECONDS, _Backoff

NOW = datetime(2026, 12, 4, 5, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    ("Fri, 04 Dec 2026 05:01:30 GMT", 90.0),  # an HTTP-date (RFC 9110 5.6.7)
    ("Fri, 04 Dec 2026 04:00:00 GMT", 0.0),  # already past: no wait
    ("soon", None),
    (None, None),
])
def test_retry_after_is_read_as_seconds_or_a_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_a_retry_after_is_waited_for_up_to_the_bound() -> None:
    short, long, plain = _Backoff(), _Backoff(), _Backoff()
    assert short.failed(300.0, asked=120.0) == pytest.approx(120.0, abs=1.0)
    assert short.holding() and not short.due()
    assert long.failed(300.0, asked=10 * MAX_RETRY_AFTER_SECONDS) == pytest.approx(MAX_RETRY_AFTER_SECONDS, abs=1.0)
    assert plain.failed(300.0) <= 5.0 and not plain.holding()  # no Retry-After: the usual backoff
    short.succeeded()
    assert not short.holding()


ONE_REPORT_AN_HOUR = DEFAULT_CONFIG + "\n[limits]\nreports_per_device_per_hour = 1\n"


def _run_until(collector: RunningCollector, state: Path, done: Callable[[], bool]) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [str(BIN / "farmwatch-agent"), "run", "--collector", collector.url, "--enroll-secret-file",
         str(collector.enroll_secret_file), "--state-dir", str(state), "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.slow
def test_run_keeps_windows_spooled_and_waits_as_a_429_asks(collector_factory: Callable[..., RunningCollector],
                                                           tmp_path: Path) -> None:
    collector = collector_factory(ONE_REPORT_AN_HOUR)
    state = tmp_path / "state"
    finished = _run_until(collector, state, lambda: len(list((state / "spool").glob("*.json"))) >= 4)
    assert finished.returncode == 0, finished.stderr
    assert [record["report"]["seq"] for record in export(collector)] == [1]
    assert len(list((state / "spool").glob("*.json"))) >= 4  # every later window kept
    assert not list((state / "quarantine").glob("*")) if (state / "quarantine").exists() else True
    refusals = [line for line in finished.stderr.splitlines() if "answered 429" in line]
    assert refusals, finished.stderr
    asked, waited = (float(n) for n in re.search(r"Retry-After: ([\d.]+) s.*retrying in (\d+) s", refusals[0]).groups())
    assert waited >= min(asked, MAX_RETRY_AFTER_SECONDS) - 1
    if asked > 10:  # not at an hour's last seconds, when the quota resets at once
        assert len(refusals) == 1, "asked again before the collector's Retry-After"
