"""Runs every other script under bench/ and prints its figures; one failing benchmark does not stop the rest."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    scripts = sorted(p for p in here.glob("*.py") if p.name != "run_all.py")
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        sys.argv = [str(script)]
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as done:  # a script's `raise SystemExit(main())` must not end the run
            if done.code not in (None, 0):
                failed.append(script.name)
    if not scripts:
        print("no benchmarks yet")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
