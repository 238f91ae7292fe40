"""bench/collector_ingest.py's command line: ``--help`` explains the benchmark and starts nothing, and a
wrong ``--store``, or ``--statements`` without PostgreSQL, is refused by name (the whole benchmark
takes minutes on two cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "collector_ingest.py"


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # TMPDIR: the benchmark keeps its stores in a temporary folder, so one made here means it ran.
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp_path)})


def test_help_explains_the_benchmark_and_starts_nothing(tmp_path: Path) -> None:
    done = run(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "parse-and-discard" in done.stdout and "--store {sqlite,postgresql,both}" in done.stdout
    assert "load generator CPU per report" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_store_is_refused_by_name(tmp_path: Path) -> None:
    done = run(tmp_path, "--store", "mysql")
    assert done.returncode == 2
    assert "--store" in done.stderr and "mysql" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_statements_without_postgresql_are_refused(tmp_path: Path) -> None:
    done = run(tmp_path, "--store", "sqlite", "--statements")
    assert done.returncode == 2
    assert "--statements" in done.stderr and "--store postgresql" in done.stderr
    assert list(tmp_path.iterdir()) == []
