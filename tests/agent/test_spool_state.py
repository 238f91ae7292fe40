"""State dir and spool: private files, atomic writes, seq never reused, bounded spool, quarantine."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from farmwatch.agent.delivery.state import Identity, StateDir
from farmwatch.agent.errors import AgentError
from farmwatch.contract import INT_LIMIT
from farmwatch.agent.delivery.notices import Notices
from farmwatch.agent.delivery.spool import Spool


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_is_readable_by_the_agent_user_only(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    state.save_identity(Identity(device_id="dev-1", token="secret-token"))
    state.allocate_seq()
    assert mode(state.root) == 0o700 and mode(state.spool_dir) == 0o700 and mode(state.quarantine_dir) == 0o700
    assert mode(state.root / "identity.json") == 0o600
    assert mode(state.root / "next_seq") == 0o600
    assert StateDir(tmp_path / "state").identity == Identity(device_id="dev-1", token="secret-token")
    assert not list(state.root.glob(".*.tmp"))  # no temp file is left behind


def test_an_existing_state_dir_with_loose_permissions_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o755)
    assert mode(StateDir(tmp_path / "state").root) == 0o700


def test_seq_is_persisted_before_use_and_never_handed_out_twice(tmp_path: Path) -> None:
    assert [StateDir(tmp_path).allocate_seq() for _ in range(3)] == [1, 2, 3]  # a new process each time


def test_the_collector_can_raise_the_seq_floor_but_never_lower_it(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.raise_seq_floor(41)
    assert state.allocate_seq() == 41
    state.raise_seq_floor(5)
    assert state.allocate_seq() == 42


def spool_in(tmp_path: Path, **bounds: int) -> Spool:
    state = StateDir(tmp_path)
    return Spool(state.spool_dir, state.quarantine_dir, **bounds)


def test_pending_reports_come_back_in_numeric_seq_order(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    for seq in (10, 2, 9, 1):
        spool.put(seq, json.dumps({"seq": seq}).encode())
    assert [json.loads(p.read_bytes())["seq"] for p in spool.pending()] == [1, 2, 9, 10]
    assert all(mode(p) == 0o600 for p in spool.pending())


def test_a_full_spool_drops_the_oldest_and_says_which(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = spool_in(tmp_path, max_reports=3)
    with caplog.at_level(logging.WARNING):
        for seq in range(1, 6):
            spool.put(seq, b"{}")
    assert [int(p.stem) for p in spool.pending()] == [3, 4, 5]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert [m.rsplit(" ", 1)[-1] for m in dropped] == ["1", "2"]


def test_the_byte_bound_counts_report_sizes(tmp_path: Path) -> None:
    spool = spool_in(tmp_path, max_bytes=250)
    for seq in range(1, 4):
        spool.put(seq, b"x" * 100)
    assert [int(p.stem) for p in spool.pending()] == [2, 3]


def test_quarantine_keeps_the_report_and_the_collectors_answer(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    path = spool.put(4, b'{"seq": 4}')
    answer = json.dumps({"errors": [{"field": "agent.os", "message": "Input should be 'linux'"}]})
    moved = spool.quarantine(path, 422, answer)
    assert spool.pending() == []
    assert moved.read_bytes() == b'{"seq": 4}'
    beside = json.loads((moved.parent / "000000000004.response.json").read_text())
    assert beside == {"status": 422, "answer": json.loads(answer)}


@pytest.mark.skipif(getattr(os, "geteuid", lambda: -1)() != 0, reason="needs root to compare root and nobody")
def test_the_default_state_dir_is_the_systems_for_root_and_the_users_otherwise(tmp_path: Path) -> None:
    script = ("import os; from farmwatch.agent.delivery.state import default_state_dir; print(default_state_dir()); "
              "os.setgid(65534); os.setuid(65534); print(default_state_dir())")
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/var/lib/farmwatch-agent", str(tmp_path / "xdg" / "farmwatch-agent")]


def test_the_quarantine_keeps_only_its_latest_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = spool_in(tmp_path, max_quarantined=2)
    with caplog.at_level(logging.WARNING):
        for seq in (1, 2, 3):
            spool.quarantine(spool.put(seq, b"{}"), 422, "{}")
    assert sorted(p.name for p in spool.quarantine_folder.iterdir()) == [
        "000000000002.json", "000000000002.response.json", "000000000003.json", "000000000003.response.json"]
    assert any(r.getMessage().endswith("dropped seq 1") for r in caplog.records)


def test_the_counter_never_hands_out_a_seq_past_the_contract(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.raise_seq_floor(INT_LIMIT)
    assert state.allocate_seq() == INT_LIMIT
    with pytest.raises(AgentError, match="past the contract"):
        state.allocate_seq()


def test_new_seqs_start_above_the_spool_but_not_above_names_out_of_range(tmp_path: Path) -> None:
    spool = spool_in(tmp_path)
    assert spool.highest_seq() == 0
    spool.put(7, b"{}")
    (spool.folder / f"{INT_LIMIT + 5}.json").write_bytes(b"{}")  # no agent numbered this one
    assert spool.highest_seq() == 7


def test_delivery_notices_survive_a_restart_and_are_said_once(tmp_path: Path) -> None:
    spool = spool_in(tmp_path, max_reports=1)
    spool.put(1, b"{}")
    spool.put(2, b"{}")  # drops seq 1 for the bound
    spool.quarantine(spool.pending()[0], 422, '{"errors": []}')
    notices = Notices(tmp_path / "notices.json")
    notices.take_from(spool)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    notices.not_kept(start, start + timedelta(minutes=5), "cannot spool it: No space left on device")
    again = Notices(tmp_path / "notices.json")  # the next `once` run
    assert [e.message for e in again.entries()] == [
        "1 report(s) could not be kept (windows 2026-01-01T00:00:00+00:00 to 2026-01-01T00:05:00+00:00): "
        "neither spooled nor accepted by the collector: cannot spool it: No space left on device",
        "1 report(s) dropped for the spool's bound: seq 1",
        "1 report(s) set aside in quarantine: seq 2: HTTP 422",
    ]
    again.reported()
    assert Notices(tmp_path / "notices.json").entries() == []
