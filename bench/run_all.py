"""Runs every benchmark under bench/ (each a script named bench_*.py or *_bench.py) and prints its figures."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    scripts = sorted(p for p in here.glob("*.py") if p.name != "run_all.py")
    for script in scripts:
        print(f"== {script.name}", flush=True)
        sys.argv = [str(script)]
        runpy.run_path(str(script), run_name="__main__")
    if not scripts:
        print("no benchmarks yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
