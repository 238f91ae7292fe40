"""The outbox keeps its promises with real processes: a receiver that is down while the verdict
changes gets the alert once when it is back; a collector SIGKILLed after the verdict's commit while
the send hangs delivers it after a restart, once; two collectors scoring one device on one
PostgreSQL raise one alert per change.

Real collector processes, a real HTTP receiver (tests/fixtures/siem_receivers.py) that verifies the
webhook's HMAC, a real throwaway PostgreSQL (root only); the reports are hand-written.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from alert_scenario import BERLIN, collector_config, enrol_with_roster, import_roster, post, report_and_score, report, scored
from collector_process import RunningCollector
from siem_receivers import HttpReceiver, wait_for

pytestmark = [pytest.mark.slow]


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[tuple[HttpReceiver, str]]:
    """A signed-webhook receiver and the [[outputs]] table that points at it (fast retries)."""
    secret = secrets.token_hex(32)
    (tmp_path / "webhook-secret").write_text(secret)
    receiver = HttpReceiver(hec_token="unused", webhook_secret=secret)
    table = (f'\n[[outputs]]\nname = "soar"\ntype = "webhook"\nurl = "{receiver.url}/webhook"\n'
             f'secret_file = "{tmp_path / "webhook-secret"}"\nretry_max_seconds = 1\n')
    try:
        yield receiver, table
    finally:
        receiver.release.set()
        receiver.stop()


def metric(collector: RunningCollector, name: str) -> float:
    text = httpx.get(f"{collector.url}/metrics", timeout=30).text
    [value] = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    return float(value)


def listed(collector: RunningCollector) -> str:
    done = collector.cli("alerts", "list", "--db", collector.db_url)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_receiver_down_while_the_verdict_changes_gets_the_alert_once_when_back(
    webhook: tuple[HttpReceiver, str], collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    receiver, table = webhook  # not started: nothing listens on its port
    collector = collector_factory(collector_config(table))
    device_id, token = enrol_with_roster(collector, tmp_path)
    assert report_and_score(collector, device_id, token, seq=1)["verdict"] == "farm"

    def attempts() -> int:
        found = re.search(r"soar: pending after (\d+) attempt\(s\), last error: POST .*Connection refused", listed(collector))
        return int(found.group(1)) if found else 0

    wait_for(lambda: attempts() >= 3, 60, "three refused attempts")
    assert metric(collector, 'farmwatch_outbox_pending{output="soar"}') == 1
    assert metric(collector, 'farmwatch_outbox_oldest_pending_age_seconds{output="soar"}') > 0
    assert metric(collector, 'farmwatch_alert_deliveries_total{output="soar",result="failed"}') >= 3
    assert metric(collector, 'farmwatch_devices_by_verdict{verdict="farm"}') == 1
    # the standard collectors, in the collector's own registry
    assert metric(collector, "process_resident_memory_bytes") > 0
    assert metric(collector, 'python_gc_collections_total{generation="0"}') >= 0
    assert "python_info{" in httpx.get(f"{collector.url}/metrics", timeout=30).text

    receiver.start()
    wait_for(lambda: "soar: delivered" in listed(collector), 60, "the delivery after the receiver came back")
    assert metric(collector, 'farmwatch_outbox_pending{output="soar"}') == 0  # nothing left that could be sent again
    [accepted] = receiver.accepted("/webhook")
    assert receiver.documents("/webhook")[0]["verdict"] == "farm"
    assert accepted.headers["x-farmwatch-alert-id"] in listed(collector)


def test_a_collector_killed_between_the_verdict_commit_and_the_send_delivers_after_restart_once(
    webhook: tuple[HttpReceiver, str], collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    receiver, table = webhook
    receiver.hold.set()  # the receiver takes the request and never answers: the send is in flight
    receiver.start()
    collector = collector_factory(collector_config(table))
    device_id, token = enrol_with_roster(collector, tmp_path)
    assert report_and_score(collector, device_id, token, seq=1)["verdict"] == "farm"  # committed with its alert
    wait_for(lambda: len(receiver.received) == 1, 30, "the send in flight")

    assert collector.process is not None
    os.killpg(collector.process.pid, signal.SIGKILL)
    collector.process.wait(timeout=10)
    collector.process = None
    receiver.hold.clear()
    receiver.release.set()
    assert receiver.accepted("/webhook") == []  # the receiver never said yes

    collector.start()  # same database; the dead holder's lease lapses, then the alert goes out
    wait_for(lambda: len(receiver.accepted("/webhook")) == 1, 90, "the delivery after the restart")
    wait_for(lambda: "soar: delivered" in listed(collector), 30, "the delivery marked")
    [first, again] = receiver.received
    assert first.headers["x-farmwatch-alert-id"] == again.headers["x-farmwatch-alert-id"]  # the same stable id
    assert len(receiver.accepted("/webhook")) == 1
    assert listed(collector).count("clear -> farm") == 1  # the restart raised no second alert


@pytest.mark.root
def test_two_collectors_on_one_postgresql_raise_one_alert_per_change(
    postgres: str, webhook: tuple[HttpReceiver, str], collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    receiver, table = webhook
    receiver.start()
    replicas = [collector_factory(collector_config(table), name=f"replica-{n}", database=postgres) for n in (1, 2)]
    first = replicas[0]
    device_id, token = enrol_with_roster(first, tmp_path, row=BERLIN)

    def both_score() -> list[str]:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return [verdict["verdict"] for verdict in pool.map(lambda replica: scored(replica, device_id), replicas)]

    post(first, report(device_id, 1, anydesk=False, pikvm=False), token)
    assert both_score() == ["clear", "clear"]  # approved RustDesk, roster in Berlin: no alert
    import_roster(first, tmp_path, device_id)  # HR now says Austin: the laptop's Berlin clock does not fit
    assert both_score() == ["review", "review"]
    post(replicas[1], report(device_id, 2, anydesk=True, pikvm=True), token)
    assert both_score() == ["farm", "farm"]
    for seq in (3, 4):  # both re-score again and again: nothing changes, nothing is raised
        post(first, report(device_id, seq, anydesk=True, pikvm=True), token)
        assert both_score() == ["farm", "farm"]

    wait_for(lambda: len(receiver.accepted("/webhook")) == 2, 60, "two deliveries")
    wait_for(lambda: listed(first).count("soar: delivered") == 2, 30, "both marked delivered")
    changes = [(doc["previous_verdict"], doc["verdict"]) for doc in receiver.documents("/webhook")]
    assert changes == [("clear", "review"), ("review", "farm")]  # in order, each once
    assert len({item.headers["x-farmwatch-alert-id"] for item in receiver.received}) == len(receiver.received) == 2
