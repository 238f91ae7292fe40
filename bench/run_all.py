"""Runs every other script under bench/, prints all their figures in one table and writes bench/results.json.

Scripts whose name starts with ``_`` are helpers (servers a benchmark starts), not benchmarks.
Each script publishes its figures through bench/report.py (figure, value, baseline measured in the
same run, ratio, target, met/missed). One failing benchmark does not stop the rest; the run exits 1
when any script failed. ``--quick`` is the shortened pass CI runs: every script with small sizes,
only to show the benchmarks still run (its figures are not comparable with a full run's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run_all.py", "report.py"}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every benchmark still runs (CI)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="where to write the figures as JSON "
                        "(default: bench/results.json)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (e.g. collector_ingest)")
    parser.add_argument("--markdown", action="store_true", help="also print the table in Markdown (for the README)")
    return parser.parse_args()


def commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return done.stdout.strip() or None


def main() -> int:
    args = arguments()
    if args.quick:
        os.environ[report.QUICK_ENV] = "1"
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))
    if args.only:
        scripts = [p for p in scripts if p.stem in args.only]
    started, load_before = datetime.now(timezone.utc), os.getloadavg()
    began = time.monotonic()
    failed, seconds = [], {}
    for script in scripts:
        print(f"== {script.name}", flush=True)
        sys.argv = [str(script)]
        script_began = time.monotonic()
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as done:  # a script's `raise SystemExit(main())` must not end the run
            if done.code not in (None, 0):
                failed.append(script.name)
        except Exception as failure:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
            print(f"{script.name} failed: {failure!r}", file=sys.stderr)
            failed.append(script.name)
        seconds[script.name] = round(time.monotonic() - script_began, 1)
    figures = report.PUBLISHED
    print(f"\n== every figure ({time.monotonic() - began:.0f} s{', quick pass: sizes too small to quote' if args.quick else ''})")
    print(report.table(figures) if figures else "no figures published")
    if args.markdown and figures:
        print("\n" + report.markdown(figures))
    results = {
        "started_at": started.isoformat(), "commit": commit(), "quick": args.quick,
        # Other work on the machine moves every figure; the load averages say how busy it was.
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": os.getloadavg()},
        "seconds": seconds, "failed": failed,
        "figures": [figure.as_json() for figure in figures],
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
