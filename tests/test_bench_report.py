"""bench/report.py: the one shape every benchmark reports in (target directions, ratios, the table)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
REPORT = runpy.run_path(str(BENCH / "report.py"))
Figure, at_least, at_most = REPORT["Figure"], REPORT["at_least"], REPORT["at_most"]


def test_a_value_target_is_checked_in_its_direction() -> None:
    assert Figure("ingest", 1_600, "reports/s", target=at_least(1_500)).met is True
    assert Figure("ingest", 1_400, "reports/s", target=at_least(1_500)).met is False
    assert Figure("p99", 99, "ms", target=at_most(100)).met is True
    assert Figure("p99", 101, "ms", target=at_most(100)).met is False


def test_a_ratio_target_compares_with_the_baseline_of_the_same_run() -> None:
    figure = Figure("ingest", 1_000, "reports/s", baseline=2_500, target=at_least(0.5, ratio=True))
    assert figure.ratio == 0.4
    assert figure.met is False
    assert Figure("cpu", 3.0, "s", baseline=2.0, target=at_most(2, ratio=True)).met is True
    assert Figure("cpu", 3.0, "s", target=at_most(2, ratio=True)).met is None  # no baseline: cannot tell


def test_a_figure_without_target_is_information_only() -> None:
    figure = Figure("rss", 36.5, "MB")
    assert figure.met is None and figure.ratio is None
    assert figure.as_json()["target"] is None


def test_the_table_names_every_column_and_the_verdicts() -> None:
    figures = [Figure("ingest, sqlite", 1_623.4, "reports/s", baseline=2_900, baseline_is="parse-and-discard",
                      target=at_least(1_500)),
               Figure("p99 at 500/s", 120.0, "ms", target=at_most(100))]
    lines = REPORT["table"](figures).splitlines()
    assert lines[0].split() == ["figure", "value", "baseline", "ratio", "target", "result", "baseline", "is"]
    assert "1,623 reports/s" in lines[1] and "0.56x" in lines[1] and ">= 1,500 reports/s" in lines[1]
    assert lines[1].split()[-2:] == ["met", "parse-and-discard"]
    assert "<= 100 ms" in lines[2] and "MISSED" in lines[2]
    assert REPORT["markdown"](figures).count("\n") == 3  # header, rule, two rows


def test_run_all_collects_every_published_figure_into_results_json(tmp_path: Path) -> None:
    # A stand-in bench folder: run_all.py and report.py copied beside two tiny scripts, one failing.
    for name in ("run_all.py", "report.py"):
        (tmp_path / name).write_text((BENCH / name).read_text())
    (tmp_path / "fast.py").write_text(
        "from report import Figure, at_least, publish, quick\n"
        "publish([Figure('answers', 10.0 if quick() else 20.0, '/s', baseline=5.0, target=at_least(1.5, ratio=True))])\n")
    (tmp_path / "broken.py").write_text("raise SystemExit(1)\n")
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(tmp_path / "run_all.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr  # broken.py failed, and the run says so
    results = json.loads(out.read_text())
    assert results["quick"] is True and results["failed"] == ["broken.py"]
    assert results["figures"] == [{"bench": "fast", "figure": "answers", "value": 10.0, "unit": "/s",
                                   "baseline": 5.0, "baseline_is": "", "ratio": 2.0,
                                   "target": ">= 1.5x baseline", "met": True}]
    assert "== every figure" in done.stdout and "met" in done.stdout.split("== every figure")[1]


def test_make_bench_leaves_out_the_scripts_for_full_runs_and_by_hand() -> None:
    sys.path.insert(0, str(BENCH))  # run_all imports its sibling report.py
    try:
        chosen = runpy.run_path(str(BENCH / "run_all.py"))["chosen"]
    finally:
        sys.path.remove(str(BENCH))
    scripts = [BENCH / f"{name}.py" for name in ("agent_cost", "detector_cost", "scoring_scale")]
    started, not_run = chosen(scripts, None, sized_down=True)  # make bench
    assert [p.stem for p in started] == ["agent_cost"] and set(not_run) == {"scoring_scale"}
    started, not_run = chosen(scripts, None, sized_down=False)  # --full or --quick
    assert [p.stem for p in started] == ["agent_cost", "scoring_scale"] and not not_run
    started, not_run = chosen(scripts[1:2], ["detector_cost"], sized_down=True)  # --only detector_cost
    assert [p.stem for p in started] == ["detector_cost"] and not not_run


def test_every_benchmark_explains_itself_on_help_and_refuses_what_it_does_not_take() -> None:
    scripts = sorted(path for path in BENCH.glob("*.py") if path.name != "report.py")
    assert len(scripts) > 10
    for script in scripts:
        helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert helped.returncode == 0, (script.name, helped.stderr)
        doc = runpy.run_path(str(script), run_name="not_main").get("__doc__") or ""
        assert helped.stdout.startswith("usage: ") and doc.split("\n")[0][:40] in helped.stdout, script.name
        if script.name != "_parse_and_discard.py":  # its --port is required: it is only ever started by another bench
            refused = subprocess.run([sys.executable, str(script), "--no-such-option"], capture_output=True,
                                     text=True, timeout=120)
            assert refused.returncode == 2 and "unrecognized arguments: --no-such-option" in refused.stderr, script.name
