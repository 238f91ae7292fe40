"""Faults injected into a real collector while clients keep reporting: nothing acknowledged is lost.

- SIGKILL of the collector, twice, under concurrent clients that retry the way agents do;
- real ``farmwatch-agent once`` processes reporting across a collector that is killed and restarted
  (their spool delivers what the dead collector never acknowledged);
- a device's record that breaks the detectors (written straight into the store, as an older
  collector could have): the other devices keep their verdicts;
- a full disk under SQLite (root: a 4 MB tmpfs): 503 + Retry-After, then delivery once space is freed.

Every scenario ends by counting the store: acknowledged == stored, no duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from agent_procs import agent_once, analyst_get, export
from collector_helpers import auth, poison, report_for, snapshot
from collector_process import DEFAULT_CONFIG, RunningCollector, free_port
from tally import Tally

pytestmark = pytest.mark.slow

CLIENTS = 8
REPORTS_PER_CLIENT = 40


def deliver(collector: RunningCollector, token: str, report: dict[str, object], tally: Tally) -> None:
    """Post until acknowledged, as an agent does: a refused connection or a 503 means "later"."""
    body = json.dumps(report).encode()
    while True:
        try:
            answer = httpx.post(f"{collector.url}/api/v1/reports", content=body, timeout=10,
                                headers={**auth(token), "Content-Type": "application/json"})
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        tally.answer("a valid report under SIGKILL", answer.status_code, during_fault=True)
        if answer.status_code == 202:
            return
        assert answer.status_code == 503, answer.text  # starting up; anything else is a bug
        time.sleep(0.05)


def test_sigkill_under_concurrent_clients_loses_nothing(
    collector_factory: Callable[..., RunningCollector], tally: Tally
) -> None:
    collector = collector_factory()
    devices = [collector.enrol(hardware_id=f"hw-kill-{n}", hostname=f"kill-{n}") for n in range(CLIENTS)]
    acknowledged: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(device: dict[str, object]) -> None:
        device_id = str(device["device_id"])
        for seq in range(1, REPORTS_PER_CLIENT + 1):
            deliver(collector, str(device["token"]), report_for(device_id, seq), tally)
            with lock:
                acknowledged.append((device_id, seq))

    threads = [threading.Thread(target=client, args=(device,)) for device in devices]
    for thread in threads:
        thread.start()
    for _ in range(2):
        while len(acknowledged) < (_ + 1) * CLIENTS * REPORTS_PER_CLIENT // 3:
            time.sleep(0.02)
        assert collector.process is not None
        os.killpg(collector.process.pid, signal.SIGKILL)
        collector.process.wait()
        collector.process = None
        tally.faults["SIGKILL of the collector"] += 1
        collector.start()
    for thread in threads:
        thread.join(timeout=600)
    stored = [(row[1], row[2]) for row in snapshot(collector.db_path)["reports"]]
    tally.acknowledged += len(acknowledged)
    tally.stored += len(stored)
    assert sorted(stored) == sorted(acknowledged)
    assert len(set(stored)) == len(stored) == CLIENTS * REPORTS_PER_CLIENT


def test_real_agents_deliver_their_spool_across_a_killed_collector(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path, tally: Tally
) -> None:
    collector = collector_factory()
    states = [tmp_path / f"agent-{n}" for n in range(3)]
    runs = 0
    for round_ in range(3):
        for state in states:
            done = agent_once(collector, state)
            runs += 1
            assert done.returncode in (0, 75), done.stderr  # 75: collector unreachable, report spooled
        if round_ < 2:
            assert collector.process is not None
            os.killpg(collector.process.pid, signal.SIGKILL)
            collector.process.wait()
            collector.process = None
            tally.faults["SIGKILL of the collector between agent runs"] += 1
            for state in states:  # these reports can only be spooled
                assert agent_once(collector, state).returncode == 75
                runs += 1
            collector.start()
    for state in states:  # one more run each delivers what is left in the spool
        assert agent_once(collector, state).returncode == 0
        runs += 1
        assert list((state / "spool").glob("*.json")) == [], "the spool still holds reports"
        assert list(state.glob("quarantine/*.json")) == [], "the collector refused a report"
    records = export(collector)
    pairs = [(r["report"]["device_id"], r["report"]["seq"]) for r in records]
    tally.acknowledged += runs
    tally.stored += len(records)
    assert len(set(pairs)) == len(pairs) == runs


def test_a_poisoned_device_leaves_the_fleet_its_verdicts(
    collector_factory: Callable[..., RunningCollector], tally: Tally
) -> None:
    collector = collector_factory()
    devices = [collector.enrol(hardware_id=f"hw-fleet-{n}", hostname=f"fleet-{n}") for n in range(5)]
    for device in devices:
        deliver(collector, str(device["token"]), report_for(str(device["device_id"]), 1), tally)
    hostile = str(devices[0]["device_id"])
    poison(collector, hostile, 2)
    tally.faults["a stored record the detectors cannot read"] += 1
    listed = analyst_get(collector, "/api/v1/devices")
    tally.answer("the fleet list with a poisoned device", listed.status_code)
    assert listed.status_code == 200, listed.text
    verdicts = {row["device_id"]: row["verdict"] for row in listed.json()}
    assert verdicts[hostile] == "review"
    assert all(verdicts[str(d["device_id"])] is not None for d in devices[1:])
    tally.acknowledged += 5
    tally.stored += len([row for row in snapshot(collector.db_path)["reports"] if row[3] != "0" * 64])


@pytest.mark.root
def test_a_full_disk_delays_reports_and_loses_none(small_disk: Path, tmp_path: Path, tally: Tally) -> None:
    collector = RunningCollector(workdir=tmp_path / "collector", port=free_port(), config_text=DEFAULT_CONFIG,
                                 database=f"sqlite:///{small_disk / 'farmwatch.db'}").start()
    try:
        device = collector.enrol()
        device_id, token = str(device["device_id"]), str(device["token"])
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize - 150_000))
        tally.faults["disk full under SQLite"] += 1
        refused = 0
        for seq in range(1, 40):
            body = json.dumps(report_for(device_id, seq, padding="x" * 20_000)).encode()
            while True:
                answer = httpx.post(f"{collector.url}/api/v1/reports", content=body, timeout=30,
                                    headers={**auth(token), "Content-Type": "application/json"})
                tally.answer("a valid report on a full disk", answer.status_code, during_fault=True)
                if answer.status_code == 202:
                    break
                assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1, answer.text
                refused += 1
                ballast.unlink(missing_ok=True)  # the operator frees space; the retry gets through
        assert refused >= 1, "the disk never filled"
    finally:
        collector.stop()
    stored = [row[2] for row in snapshot(small_disk / "farmwatch.db")["reports"]]
    tally.acknowledged += 39
    tally.stored += len(stored)
    assert sorted(stored) == list(range(1, 40))
