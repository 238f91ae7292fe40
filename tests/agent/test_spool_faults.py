"""Spool files the agent cannot parse safely never crash it and never block what is behind them.

Real ``farmwatch-agent once`` processes against the real collector (the shared ``collector``
fixture); the damaged files are written by the test into the agent's own spool, as a disk fault,
a restored backup or a hostile local user with the agent's rights could leave them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from agent_procs import agent_once, export
from collector_process import RunningCollector

from farmwatch.agent.delivery.spool import MAX_REPORT_FILE_BYTES, Spool, UnreadableReport
from farmwatch.agent.delivery.state import StateDir

NESTED = b"[" * 100_000 + b"]" * 100_000  # CPython's JSON decoder raises RecursionError on it


def _plant(spool: Path, seq: int, body: bytes) -> None:
    (spool / f"{seq:012d}.json").write_bytes(body)


@pytest.mark.slow
def test_unparseable_spool_files_are_quarantined_with_a_reason_and_the_rest_delivered(
    collector: RunningCollector, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    good = export(collector)[0]["report"]
    spool = state / "spool"
    _plant(spool, 2, NESTED)
    _plant(spool, 3, b"{" + b'"a":{' * 100_000 + b"}" * 100_001)
    _plant(spool, 4, b" " * (MAX_REPORT_FILE_BYTES + 1))
    os.mkfifo(spool / f"{5:012d}.json")  # reading it would block for ever
    _plant(spool, 6, b'{"schema": "\xff\xfe"}')  # not UTF-8
    _plant(spool, 7, json.dumps({**good, "seq": 7, "window_start": good["window_end"]}).encode())
    _plant(spool, 8, b"[1, 2]")

    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    stored = {record["report"]["seq"]: record["report"] for record in export(collector)}
    assert sorted(stored) == [1, 7, 9]  # the good spooled report and this run's (the counter passed the spool)
    quarantine = state / "quarantine"
    reasons = {seq: json.loads((quarantine / f"{seq:012d}.response.json").read_text())["answer"]
               for seq in (2, 3, 4, 5, 6, 8)}
    assert "recursion limit" in reasons[2] and "recursion limit" in reasons[3]
    assert f"over the {MAX_REPORT_FILE_BYTES}" in reasons[4]
    assert "not a regular file" in reasons[5]
    assert "UnicodeDecodeError" in reasons[6]
    assert "a JSON list, not an object" in reasons[8]
    assert not list(spool.glob("*.json"))
    notice = [e["message"] for e in stored[9]["errors"] if e["probe"] == "agent"]
    assert len(notice) == 1 and notice[0].startswith("6 report(s) set aside in quarantine: seq 2: the spooled file")

    again = agent_once(collector, state)  # nothing left that could crash the next run either
    assert again.returncode == 0, again.stderr
    assert sorted(r["report"]["seq"] for r in export(collector)) == [1, 7, 9, 10]
    assert not [e for e in export(collector)[-1]["report"]["errors"] if e["probe"] == "agent"]  # said once


def test_read_refuses_a_symlink_without_following_it(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    secret = tmp_path / "elsewhere.json"
    secret.write_text('{"seq": 1}')
    link = state.spool_dir / f"{1:012d}.json"
    link.symlink_to(secret)
    with pytest.raises(UnreadableReport, match="cannot open it"):
        Spool(state.spool_dir, state.quarantine_dir).read(link)
