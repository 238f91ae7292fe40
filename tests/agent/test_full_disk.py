"""A full disk under the agent's state dir never stops delivery and never drops a report silently.

A real tmpfs of 512 KiB (root only; skipped with the reason otherwise) holds the state dir, filled to
the last byte by a file; the collector is the real process (its database elsewhere), the agent the
real CLI. What the agent must do: deliver the spool before writing a new report (so delivering
frees the space), send a report the disk cannot take directly, and count one that can be neither
spooled nor sent in a later report's ``errors[]``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import BIN, agent_once, export, run_agent
from collector_process import RunningCollector, free_port
from tiny_disk import fill, tiny_tmpfs

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "tiny", "512k") as mounted:
        yield mounted


def no_temp_files(state: Path) -> bool:
    return not [p for p in state.rglob("*") if p.name.endswith(".tmp")]


def stored(collector: RunningCollector) -> list[int]:
    return sorted(record["report"]["seq"] for record in export(collector))


def test_unenrolled_on_a_full_disk_with_no_collector_says_so_and_exits_74(disk: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    state = disk / "state"
    (state / "spool").mkdir(parents=True)
    fill(disk)
    done = run_agent("once", "--window", "0", "--collector", f"http://127.0.0.1:{free_port()}",
                     "--enroll-secret-file", str(secret), "--state-dir", str(state))
    assert done.returncode == 74 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "neither spooled nor sent" in last and "No space left on device" in last
    assert no_temp_files(state)


def test_the_spool_goes_out_first_and_a_report_the_disk_cannot_take_is_sent_directly(
    collector: RunningCollector, disk: Path
) -> None:
    state = disk / "state"
    assert agent_once(collector, state).returncode == 0  # enrolled; seq 1 stored
    collector.stop()
    assert [agent_once(collector, state).returncode for _ in range(3)] == [75, 75, 75]  # 2, 3, 4 spooled
    filler = fill(disk)
    collector.start()

    freed = agent_once(collector, state)  # only delivering 2..4 first makes room for 5
    assert freed.returncode == 0, freed.stderr
    assert stored(collector) == [1, 2, 3, 4, 5]
    assert "sent it directly" not in freed.stderr

    fill(disk, "filler-2")  # full again, nothing spooled to free: seq 6 cannot be written
    direct = agent_once(collector, state)
    assert direct.returncode == 0, direct.stderr
    assert "No space left on device; sent it directly" in direct.stderr
    assert stored(collector) == [1, 2, 3, 4, 5, 6]
    assert no_temp_files(state) and not list((state / "spool").glob("*.json"))
    filler.unlink()


def test_a_once_run_that_kept_nothing_is_named_by_the_next_run(collector: RunningCollector, disk: Path) -> None:
    state = disk / "state"
    assert agent_once(collector, state).returncode == 0  # enrolled; the notices file reserved its space
    fill(disk)
    collector.stop()
    lost = agent_once(collector, state)
    assert lost.returncode == 74, lost.stderr
    assert "cannot save delivery notices" not in lost.stderr  # written over the reserved file
    collector.start()
    direct = agent_once(collector, state)
    assert direct.returncode == 0 and "sent it directly" in direct.stderr, direct.stderr
    reports = sorted((r["report"] for r in export(collector)), key=lambda r: r["seq"])
    assert [r["seq"] for r in reports] == [1, 3]  # seq 2 was neither spooled nor sent
    notices = [e["message"] for e in reports[-1]["errors"] if e["probe"] == "agent"]
    assert len(notices) == 1 and notices[0].startswith("1 report(s) could not be kept"), notices


def test_reports_that_can_be_neither_spooled_nor_sent_are_counted_in_a_later_report(
    collector: RunningCollector, disk: Path
) -> None:
    state = disk / "state"
    assert agent_once(collector, state).returncode == 0
    fill(disk)
    collector.stop()
    agent = subprocess.Popen(
        [str(BIN / "farmwatch-agent"), "run", "--collector", collector.url, "--enroll-secret-file",
         str(collector.enroll_secret_file), "--state-dir", str(state), "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(3)  # about five windows with a full disk and no collector
        collector.start()
        deadline = time.monotonic() + 60
        while len(stored(collector)) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        agent.send_signal(signal.SIGTERM)
        _, log = agent.communicate(timeout=30)
    assert agent.returncode == 0, log
    assert "Traceback" not in log
    lost = len(re.findall(r"report seq \d+ \(window .*\) is lost", log))
    assert lost >= 2, log
    reports = sorted((r["report"] for r in export(collector)), key=lambda r: r["seq"])
    notices = [e["message"] for e in reports[1]["errors"] if e["probe"] == "agent"]
    assert len(notices) == 1 and notices[0].startswith(f"{lost} report(s) could not be kept"), notices
    assert "No space left on device" in notices[0]
    # Every window is accounted for: stored, or counted as lost in the report after it.
    made = reports[-1]["seq"] - reports[0]["seq"]
    assert made == lost + len(reports) - 1
