"""How fast a real ``farmwatch-agent once`` drains a backlog into a real collector on loopback.

Since issue 15 every spooled report is read through a bounded, non-blocking open and parsed under a
recursion guard, stamped with the seq its file name says, and a report the collector fails on is
skipped instead of stopping the pass. This prints the drain rate for a backlog of clean reports and
for the same backlog behind a 100,000-deep JSON file, each beside a baseline measured on the same
collector in the same run: the same reports, for a second device, posted one after another by a bare
HTTP client (one keep-alive connection, gzip, as the agent sends them), so the ratio is what the
agent's own pass adds on top of what the collector takes. (Before those changes, commit 53f808d's
agent drained a clean backlog at 50-57 reports/s with this script at load ~7, and crashed behind the
deep file: 0 stored.)

Set ``FARMWATCH_AGENT_TREE=/path/to/an/old/checkout`` to measure another tree's agent instead (it is
put first on PYTHONPATH); the collector is always this tree's.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_process import launch_collector  # noqa: E402  (the tests' real-collector launcher)
from report import Figure, at_least, describe, publish, quick  # noqa: E402

BACKLOG = 30 if quick() else 300
NESTED = b"[" * 100_000 + b"]" * 100_000


def agent(*args: str) -> subprocess.CompletedProcess[str]:
    tree = os.environ.get("FARMWATCH_AGENT_TREE")
    env = {**os.environ, "PYTHONPATH": tree} if tree else None
    return subprocess.run([sys.executable, "-P", "-m", "farmwatch.agent.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def backlog(first: dict[str, object], device_id: str) -> list[dict[str, object]]:
    """BACKLOG minimal reports of ``device_id`` (seq 2 on), two seconds apart up to now, each made from
    the agent's first report: the same whichever tree's probes made that one, so trees compare."""
    now = datetime.now(timezone.utc)
    reports = []
    for i in range(BACKLOG):
        start = now - timedelta(seconds=2 * (BACKLOG - i))
        reports.append({"schema": first["schema"], "device_id": device_id, "seq": i + 2,
                        "window_start": start.isoformat(), "window_end": (start + timedelta(seconds=1)).isoformat(),
                        "agent": first["agent"], "errors": []})
    return reports


def bare_posts(url: str, token: str, reports: list[dict[str, object]]) -> tuple[float, int]:
    """Seconds to post ``reports`` one after another on one connection, and how many were accepted."""
    with httpx.Client(base_url=url, timeout=60) as client:
        started, accepted = time.perf_counter(), 0
        for report in reports:
            answer = client.post("/api/v1/reports", content=gzip.compress(json.dumps(report).encode()),
                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip",
                                          "Authorization": f"Bearer {token}"})
            accepted += answer.status_code == 202
        return time.perf_counter() - started, accepted


def drain(folder: Path, poisoned_first: bool) -> tuple[float, int, float]:
    """Seconds to drain ``BACKLOG`` spooled reports in one ``once`` run, how many were stored, and
    the baseline: reports/s of the same reports posted by a bare client to the same collector."""
    collector = launch_collector(folder / "collector")
    try:
        state = folder / "state"
        base = ["--collector", collector.url, "--enroll-secret-file", str(collector.enroll_secret_file),
                "--state-dir", str(state), "--window", "0"]
        assert agent("once", *base).returncode == 0
        first = json.loads(collector.cli("export", "--db", collector.db_url).stdout.splitlines()[0])["report"]
        for report in backlog(first, first["device_id"]):
            (state / "spool" / f"{report['seq']:012d}.json").write_text(json.dumps(report))
        if poisoned_first:
            (state / "spool" / f"{1:012d}.json").write_bytes(NESTED)  # before every real one
        (state / "next_seq").write_text(f"{BACKLOG + 2}\n")
        started = time.perf_counter()
        agent("once", *base)
        elapsed = time.perf_counter() - started
        stored = len(collector.cli("export", "--db", collector.db_url).stdout.splitlines())
        other = collector.enrol(hardware_id="hw-bare-client", hostname="bare-client")
        posted, accepted = bare_posts(collector.url, str(other["token"]), backlog(first, str(other["device_id"])))
        if accepted != BACKLOG:
            raise RuntimeError(f"the bare client's baseline: {accepted} of {BACKLOG} reports accepted")
    finally:
        collector.stop()
    return elapsed, stored - 1, BACKLOG / posted  # less the enrolment run's report


def main() -> int:
    figures = []
    for poisoned_first in (False, True):
        with tempfile.TemporaryDirectory() as folder:
            elapsed, stored, floor = drain(Path(folder), poisoned_first)
        label = "behind a 100,000-deep JSON file" if poisoned_first else "clean"
        print(f"agent spool drain, {BACKLOG} reports {label}: {stored} stored (with the run's own) in {elapsed:.1f} s; "
              f"a bare client posted the same reports at {floor:.0f}/s (load average {os.getloadavg()[0]:.1f})")
        figures.append(Figure(f"agent spool drain, {BACKLOG} reports {label}", stored / elapsed, "reports/s",
                              floor, "the same reports posted one by one by a bare HTTP client, same collector"))
        figures.append(Figure(f"reports stored of the backlog, {label}", stored, "reports", target=at_least(BACKLOG)))
    publish(figures)
    return 0


if __name__ == "__main__":
    describe(__doc__)
    raise SystemExit(main())
