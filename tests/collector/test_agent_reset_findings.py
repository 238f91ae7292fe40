"""A reinstalled or reset agent is evidence, and loses no report (issue 16).

Real ``farmwatch-agent once`` processes against the real collector process: a reinstall (the state
dir removed, as a package purge does) enrols again as the same machine; a state dir put back from a
backup restarts the sequence, the collector refuses the taken seqs (409), the agent renumbers. Both
are read back as the device's ``agent_health`` finding through the analyst API, and every report is
in the export exactly once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from agent_procs import agent_once, analyst_get, export
from collector_process import RunningCollector

pytestmark = pytest.mark.slow


def _agent_health(collector: RunningCollector, device_id: str) -> dict[str, Any]:
    verdict = analyst_get(collector, f"/api/v1/devices/{device_id}").json()
    found = [f for f in verdict["findings"] if f["detector"] == "agent_health"]
    assert found, verdict
    return found[0]


def test_a_fresh_install_enrols_again_and_is_named_a_reinstall_without_a_restart(
    collector: RunningCollector, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    for _ in range(2):
        assert agent_once(collector, state).returncode == 0
    shutil.rmtree(state)  # the agent purged and installed again, the machine still running
    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    records = export(collector)
    assert [r["enrolments"] for r in sorted(records, key=lambda r: r["report"]["seq"])] == [1, 1, 2]
    device = records[0]["report"]["device_id"]
    assert {r["report"]["device_id"] for r in records} == {device}  # the same machine keeps its device id
    finding = _agent_health(collector, device)
    assert finding["evidence"]["reenrolments"] == 1
    assert finding["evidence"]["reinstalled_without_restart"] == 1  # this box did not reboot meanwhile
    assert finding["evidence"]["parts"]["reenrolled"] == 0.35
    assert "enrolled again as the same machine" in finding["summary"]


def test_a_state_dir_restored_from_a_backup_restarts_the_sequence_as_evidence_and_loses_nothing(
    collector: RunningCollector, tmp_path: Path
) -> None:
    state, backup = tmp_path / "state", tmp_path / "backup"
    assert agent_once(collector, state).returncode == 0
    shutil.copytree(state, backup)  # identity, token and counter as they were after seq 1
    for _ in range(3):
        assert agent_once(collector, state).returncode == 0  # seqs 2-4
    shutil.rmtree(state)
    shutil.copytree(backup, state)  # put back: the counter says 2 again
    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    assert "stored with other content" in done.stderr  # the collector refused seq 2, the agent renumbered
    stored = export(collector)
    assert sorted(r["report"]["seq"] for r in stored) == [1, 2, 3, 4, 5]  # nothing lost, nothing twice
    newest = max(stored, key=lambda r: r["report"]["seq"])
    assert newest["seq_conflicts"] >= 1 and newest["enrolments"] == 1
    finding = _agent_health(collector, newest["report"]["device_id"])
    assert finding["evidence"]["seq_conflicts"] == newest["seq_conflicts"]
    assert "seq_conflicts" in finding["evidence"]["parts"]
    assert "sequence restarted" in finding["summary"]
