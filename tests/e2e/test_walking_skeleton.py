"""Issue 2's "done when": the real collector, the real agent CLI, a real AnyDesk-named process.

Everything runs as separate processes on loopback: ``farmwatch-collector serve`` (shared
``collector`` fixture), ``farmwatch-agent once`` (the installed console script), and a copy of
the Python interpreter named ``AnyDesk`` holding a TCP connection.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from agent_procs import NamedProcess, agent_once, analyst_get, export
from collector_process import RunningCollector

pytestmark = pytest.mark.slow


def test_a_running_anydesk_session_reaches_the_analyst_as_a_finding(collector: RunningCollector, tmp_path: Path) -> None:
    anydesk = NamedProcess(tmp_path / "bin", "AnyDesk")
    try:
        done = agent_once(collector, tmp_path / "state")
    finally:
        anydesk.close()
    assert done.returncode == 0, done.stderr
    device_id = json.loads((tmp_path / "state" / "identity.json").read_text())["device_id"]

    [stored] = export(collector)
    [seen] = [tool for tool in stored["report"]["remote_access"] if tool["pid"] == anydesk.pid]
    assert (seen["tool"], seen["process"]) == ("anydesk", "AnyDesk")
    assert {c["direction"] for c in seen["connections"]} == {"inbound", "outbound"}

    listed = analyst_get(collector, "/api/v1/devices")
    assert listed.status_code == 200, listed.text
    assert device_id in [device["device_id"] for device in listed.json()]

    verdict = analyst_get(collector, f"/api/v1/devices/{device_id}")
    assert verdict.status_code == 200, verdict.text
    findings = [f for f in verdict.json()["findings"] if f["attack"] == "T1219"]
    assert findings, verdict.json()
    assert any("AnyDesk" in f["summary"] for f in findings), findings
    assert verdict.json()["risk"] > 0 and verdict.json()["verdict"] != "clear"


def test_reports_made_while_the_collector_is_down_arrive_exactly_once(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = agent_once(collector, state)  # seq 1, delivered
    assert first.returncode == 0, first.stderr

    collector.stop()
    down = agent_once(collector, state)  # seq 2, spooled
    assert down.returncode == 75, down.stderr
    assert "Traceback" not in down.stderr and "unreachable" in down.stderr

    collector.start()  # same port, same database
    back = agent_once(collector, state)  # delivers seq 2, then seq 3
    assert back.returncode == 0, back.stderr

    records = export(collector)
    seqs = [record["report"]["seq"] for record in records]
    assert Counter(seqs) == Counter({1: 1, 2: 1, 3: 1})
    assert len({record["report"]["device_id"] for record in records}) == 1
    assert not list((state / "spool").glob("*.json"))
