"""How fast a real ``farmwatch-agent once`` drains a backlog into a real collector on loopback.

Since issue 15 every spooled report is read through a bounded, non-blocking open and parsed under a
recursion guard, stamped with the seq its file name says, and a report the collector fails on is
skipped instead of stopping the pass. This prints the drain rate for a backlog of clean reports and
for the same backlog behind a 100,000-deep JSON file, beside the rate the agent had before those
changes (commit 53f808d, measured with this script on the 2-core development machine).

Set ``FARMWATCH_AGENT_TREE=/path/to/an/old/checkout`` to measure another tree's agent instead (it is
put first on PYTHONPATH); the collector is always this tree's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_process import launch_collector  # noqa: E402  (the tests' real-collector launcher)
from report import Figure, at_least, publish, quick  # noqa: E402

BACKLOG = 30 if quick() else 300
# 53f808d through FARMWATCH_AGENT_TREE, clean backlog: 50, 57, 56 reports/s, interleaved with this tree's
# 43, 67, 58 on a shared machine at load average ~7; behind the 100,000-deep file it crashed (0 stored).
BASELINE_REPORTS_PER_SECOND = 56.0
NESTED = b"[" * 100_000 + b"]" * 100_000


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    tree = os.environ.get("FARMWATCH_AGENT_TREE")
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    return subprocess.run([sys.executable, "-P", "-m", "farmwatch.agent.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def drain(folder: Path, poisoned_first: bool) -> tuple[float, int]:
    """Seconds to drain ``BACKLOG`` spooled reports in one ``once`` run, and how many were stored."""
    collector = launch_collector(folder / "collector")
    try:
        state = folder / "state"
        base = ["--collector", collector.url, "--enroll-secret-file", str(collector.enroll_secret_file),
                "--state-dir", str(state), "--window", "0"]
        assert agent("once", *base).returncode == 0
        first = json.loads(collector.cli("export", "--db", collector.db_url).stdout.splitlines()[0])["report"]
        now = datetime.now(timezone.utc)
        for i in range(BACKLOG):
            start = now - timedelta(seconds=2 * (BACKLOG - i))
            # The same minimal report whichever tree's probes made the first one, so trees compare.
            report = {"schema": first["schema"], "device_id": first["device_id"], "seq": i + 2,
                      "window_start": start.isoformat(), "window_end": (start + timedelta(seconds=1)).isoformat(),
                      "agent": first["agent"], "errors": []}
            (state / "spool" / f"{i + 2:012d}.json").write_text(json.dumps(report))
        if poisoned_first:
            (state / "spool" / f"{1:012d}.json").write_bytes(NESTED)  # before every real one
        (state / "next_seq").write_text(f"{BACKLOG + 2}\n")
        started = time.perf_counter()
        agent("once", *base)
        elapsed = time.perf_counter() - started
        stored = len(collector.cli("export", "--db", collector.db_url).stdout.splitlines())
    finally:
        collector.stop()
    return elapsed, stored - 1  # less the enrolment run's report


def main() -> int:
    figures = []
    for poisoned_first in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            elapsed, stored = drain(Path(folder), poisoned_first)
        label = "behind a 100,000-deep JSON file" if poisoned_first else "clean"
        print(f"agent spool drain, {BACKLOG} reports {label}: {stored} stored (with the run's own) in {elapsed:.1f} s")
        # The baseline is 53f808d's clean drain, measured earlier (see BASELINE_REPORTS_PER_SECOND), not in this run.
        figures.append(Figure(f"agent spool drain, {BACKLOG} reports {label}", stored / elapsed, "reports/s",
                              BASELINE_REPORTS_PER_SECOND, "53f808d's agent, clean backlog (earlier run, load ~7)"))
        figures.append(Figure(f"reports stored of the backlog, {label}", stored, "reports", target=at_least(BACKLOG)))
    publish(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
