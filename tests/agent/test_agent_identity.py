"""A reinstalled agent loses none of its spooled reports, even when their seqs collide with stored ones.

The real collector process (restarted on the same port and database to play "down" and "up") and
real ``farmwatch-agent once`` processes; "reinstall" is what a package purge does: the state dir
goes, and here a backup of the spool is put back.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from agent_procs import agent_once, export
from collector_process import RunningCollector

pytestmark = pytest.mark.slow


def _windows(spool: Path) -> set[str]:
    return {json.loads(p.read_bytes())["window_start"] for p in spool.glob("*.json")}


def test_a_reinstalled_agent_delivers_every_spooled_report_exactly_once(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    collector = collector_factory()
    state, backup = tmp_path / "state", tmp_path / "spool-backup"
    made: set[str] = set()  # window_start of every report any agent run spooled

    assert agent_once(collector, state).returncode == 0  # seq 1 stored
    made |= {r["report"]["window_start"] for r in export(collector)}
    collector.stop()
    for _ in range(2):  # seq 2 and 3 wait in the spool
        assert agent_once(collector, state).returncode == 75
    made |= _windows(state / "spool")
    shutil.copytree(state / "spool", backup)
    collector.start()
    assert agent_once(collector, state).returncode == 0  # 2, 3 and this run's 4 stored
    device = json.loads((state / "identity.json").read_text())["device_id"]

    shutil.rmtree(state)  # reinstall: identity and counter gone; the spool backup (2, 3: stored) restored
    shutil.copytree(backup, state / "spool")
    collector.stop()
    down = agent_once(collector, state)  # never enrolled: its report waits under seq 4, taken by other content
    assert down.returncode == 75, down.stderr
    assert sorted(p.name for p in (state / "spool").glob("*.json")) == [
        "000000000002.json", "000000000003.json", "000000000004.json"]
    made |= _windows(state / "spool")
    collector.start()
    up = agent_once(collector, state)
    assert up.returncode == 0, up.stderr
    assert "sending it as seq 5" in up.stderr

    stored = [record["report"] for record in export(collector)]
    made |= {r["window_start"] for r in stored}  # this run's own report
    assert sorted(r["seq"] for r in stored) == [1, 2, 3, 4, 5, 6]
    assert sorted(r["window_start"] for r in stored) == sorted(made)  # every report stored, none twice
    assert {r["device_id"] for r in stored} == {device}
    assert not list((state / "quarantine").iterdir()) and not list((state / "spool").glob("*.json"))
    by_window = sorted(stored, key=lambda r: r["window_end"])
    assert [r["seq"] for r in by_window] == [1, 2, 3, 4, 5, 6]  # renumbering kept the sequence in time order


def test_a_report_renamed_but_not_yet_restamped_goes_out_under_its_files_seq(
    collector: RunningCollector, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    report = export(collector)[0]["report"]
    # What a crash between the rename to a new seq and the restamp leaves: file 5, content seq 1.
    (state / "spool" / f"{5:012d}.json").write_text(json.dumps({**report, "window_start": report["window_end"]}))
    (state / "spool" / f"{4:012d}.json").symlink_to(tmp_path / "nowhere")  # planted, dangling
    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    assert sorted(r["report"]["seq"] for r in export(collector)) == [1, 5, 6]
    assert (state / "quarantine" / f"{4:012d}.json").is_symlink()
    assert "sent it directly" not in done.stderr  # the spool's bound check did not trip over the symlink


def test_a_counter_far_behind_the_collector_catches_up_without_losing_a_report(
    collector: RunningCollector, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    first = export(collector)[0]["report"]

    def plant(seq: int, shift: int) -> None:
        start = datetime.fromisoformat(first["window_end"]) + timedelta(seconds=shift)
        report = {**first, "seq": seq, "window_start": start.isoformat(), "window_end": start.isoformat()}
        (state / "spool" / f"{seq:012d}.json").write_text(json.dumps(report))

    for seq in range(2, 9):
        plant(seq, seq)
    assert agent_once(collector, state).returncode == 0  # the collector now holds 1..9
    (state / "next_seq").write_text("2\n")  # as a counter a full disk kept from being saved, then a restart
    plant(2, 100)  # other content under a taken seq, far below the collector's
    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    assert "kept for the next pass" in done.stderr  # five renumbers were not enough in the first pass
    stored = [record["report"] for record in export(collector)]
    assert sorted(r["seq"] for r in stored) == list(range(1, 12))
    assert len({r["window_start"] for r in stored}) == 11  # the variant and this run's report, each once
