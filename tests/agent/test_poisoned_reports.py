"""A report the collector fails on (5xx) for ever is set aside; a collector that is merely down loses nothing.

The collector no longer answers 5xx to any client input (issue 15), so a "poisoned" report is made
by a small reverse proxy written by hand for these tests (tests/fixtures/poisoning_proxy.py) in
front of the real collector process. The agent is the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import export, run_agent
from collector_process import RunningCollector, free_port
from poisoning_proxy import PoisoningProxy

from farmwatch.agent.delivery.transport import MAX_FAILED_ATTEMPTS

pytestmark = pytest.mark.slow


@pytest.fixture
def proxy(collector: RunningCollector) -> Iterator[PoisoningProxy]:
    running = PoisoningProxy(collector)
    yield running
    running.close()


def once_via(url: str, collector: RunningCollector, state: Path) -> int:
    done = run_agent("once", "--collector", url, "--enroll-secret-file", str(collector.enroll_secret_file),
                     "--state-dir", str(state), "--window", "0")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def spooled(state: Path) -> list[int]:
    return sorted(int(p.stem) for p in (state / "spool").glob("*.json"))


def stored(collector: RunningCollector) -> list[int]:
    return sorted(record["report"]["seq"] for record in export(collector))


def test_a_report_the_collector_always_fails_on_is_quarantined_and_the_rest_flow(
    collector: RunningCollector, proxy: PoisoningProxy, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    proxy.poisoned = {2}
    assert once_via(proxy.url, collector, state) == 0  # seq 1
    runs = [once_via(proxy.url, collector, state) for _ in range(MAX_FAILED_ATTEMPTS + 1)]
    # The first run made seq 2 and had nothing behind it to tell a failing report from a failing
    # collector; every later run's own report got past seq 2, counting one failed attempt.
    assert runs == [75] + [0] * MAX_FAILED_ATTEMPTS
    assert stored(collector) == [1, *range(3, 3 + MAX_FAILED_ATTEMPTS)]
    assert spooled(state) == []
    reason = json.loads((state / "quarantine" / "000000000002.response.json").read_text())
    assert f"{MAX_FAILED_ATTEMPTS} passes failed on this report" in reason["answer"]
    assert once_via(proxy.url, collector, state) == 0
    last = max(export(collector), key=lambda r: r["report"]["seq"])["report"]
    assert any(e["probe"] == "agent" and "seq 2: collector at" in e["message"] for e in last["errors"])


def test_a_failing_or_unreachable_collector_keeps_the_whole_spool(
    collector: RunningCollector, proxy: PoisoningProxy, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert once_via(proxy.url, collector, state) == 0  # enrolled, seq 1 stored
    proxy.fail_every_report = True  # up, but failing on every report: nothing is anyone's fault
    assert [once_via(proxy.url, collector, state) for _ in range(MAX_FAILED_ATTEMPTS + 1)] == [75] * 6
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert [once_via(unreachable, collector, state) for _ in range(2)] == [75, 75]
    assert proxy.answered_500 > MAX_FAILED_ATTEMPTS
    assert spooled(state) == list(range(2, 2 + MAX_FAILED_ATTEMPTS + 3))
    assert not list((state / "quarantine").iterdir())
    assert not (state / "spool" / "failed-attempts").exists()  # no attempt was counted against a report

    proxy.fail_every_report = False
    assert once_via(proxy.url, collector, state) == 0
    assert stored(collector) == list(range(1, 2 + MAX_FAILED_ATTEMPTS + 4))
