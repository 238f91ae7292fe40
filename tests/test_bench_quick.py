"""The shortened benchmark pass CI runs: every script under bench/ still runs and publishes its figures.

``bench/run_all.py --quick`` shrinks each benchmark (bench/report.py ``quick()``); the figures of such
a run are not quotable, so nothing here checks a speed: only that the script finished, published at
least one figure in the shared shape, and that every figure is a number (a broken measurement shows
up as a failure here rather than as a missing row in ``make bench``). A script may exit 1 for a missed
target (detection_quality does); a traceback is a broken benchmark. Correctness figures are checked:
the ingest benchmark's count of reports not stored exactly once must be 0 even in the short pass.
A script run_all.py starts beside another's idle phase (run_all.BESIDE) is run that way here, with its
host, so the path ``make bench`` takes is the one checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
from run_all import BESIDE  # noqa: E402  (bench/ is not a package)

ALONE = sorted(p.stem for p in BENCH.glob("*.py") if p.name not in {"run_all.py", "report.py"} and not p.name.startswith("_")
               and p.stem not in BESIDE and p.stem not in BESIDE.values())
SCRIPTS = [*ALONE, *(f"{host}+{guest}" for host, guest in BESIDE.items())]  # a+b: b runs beside a's idle phase


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_still_runs_and_publishes_figures(script: str, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    names = script.split("+")
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", *names, "--out", str(out)],
                          capture_output=True, text=True, timeout=1700)
    crashed = "Traceback" in done.stderr or any(f"{name}.py failed:" in done.stderr for name in names)
    assert done.returncode in (0, 1) and not crashed, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    assert {figure["bench"] for figure in results["figures"]} == set(names), f"{script}: a script published no figure"
    if len(names) == 2:
        assert results["ran_beside"] == {names[1]: names[0]}
        assert set(results["seconds"]) == {f"{name}.py" for name in names}
    for figure in results["figures"]:
        assert figure["bench"] in names and figure["figure"] and figure["unit"]
        assert isinstance(figure["value"], (int, float)) and math.isfinite(figure["value"]), figure
        assert figure["met"] in (True, False, None)
        if "not stored exactly once" in figure["figure"]:
            assert figure["met"] is True, figure
