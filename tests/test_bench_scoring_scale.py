"""bench/scoring_scale.py --store-dir: a store is built once, kept with its baselines, and reused by the
next run, whose measurements run on a copy (the kept store is byte-for-byte as built afterwards).
Real runs of the script at its --quick sizes; nothing here checks a speed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "scoring_scale.py"


def _run(*options: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", *options], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.db"))}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_kept_store_is_reused_as_built_and_fleet_only_skips_the_full_reread(tmp_path: Path) -> None:
    first = _run("--store-dir", str(tmp_path))
    assert "30 laptops: 624 reports" in first and "reusing" not in first
    assert {p.name for p in tmp_path.iterdir()} == {f"{n}-laptops.{kind}" for n in (10, 20, 30) for kind in ("db", "json")}
    described = json.loads((tmp_path / "30-laptops.json").read_text())
    assert described["records"] == 624 and described["keep_reports"] is False and "seconds" in described["baselines"]
    built = _digests(tmp_path)
    scored = [line for line in first.splitlines() if line.startswith("30 laptops, 624 reports")]

    again = _run("--store-dir", str(tmp_path), "--fleet-only")
    assert "30 laptops: reusing" in again and "stored, reduced" not in again
    assert "full at" not in again and "no full re-read measured (--fleet-only)" in again
    assert _digests(tmp_path) == built  # the run scored a copy
    assert not list(tmp_path.glob("*.run.db*"))
    # the same interval scored again from the same state: the same devices and verdicts
    assert [line.split(" verdicts in")[0] for line in again.splitlines() if line.startswith("30 laptops, 624 reports")] \
        == [line.split(" verdicts in")[0] for line in scored]
