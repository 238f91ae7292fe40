"""Runs every other script under bench/, prints all their figures in one table and writes bench/results.json.

Scripts whose name starts with ``_`` are helpers (servers a benchmark starts), not benchmarks.
Each script publishes its figures through bench/report.py (figure, value, baseline measured in the
same run, ratio, target, met/missed). One failing benchmark does not stop the rest; the run exits 1
when any script failed. ``--quick`` is the shortened pass CI runs: every script with small sizes,
only to show the benchmarks still run (its figures are not comparable with a full run's).

Sizes: ``make bench`` (no flag) must finish within BUDGET_SECONDS on a 2-core machine; its own wall
time is a row of the table against that budget. Each script's own default sizes are what it runs,
with two exceptions: detection_quality's default is one seed per variant (``--full`` there is the
whole sweep, about 25 min here), and scripts in LEFT_TO_FULL are not run at all, because no size
of theirs fits yet: the run prints each one's reason and the targets it leaves unchecked, and
results.json lists them under ``not_run``. ``--full`` runs everything at its full sizes (well over
an hour here); ``--only NAME`` runs the scripts named, LEFT_TO_FULL and BY_HAND ones included.
Scripts run one after another, never side by side while anything is timed: most figures are
timings, and a second benchmark on the same two cores would move them. One exception, in BESIDE:
detection_quality, whose figures are counts of verdicts (it scores its fleets two at a time itself),
runs as a child process during agent_cost's idle phase (four agents reporting every 60 s for two
intervals, measured in CPU seconds and memory; report.idle_phase), and the next script starts only
once it has ended. Its figures, output and seconds join the run's as if it had run alone; the line
after the table and results.json (``ran_beside``) say where it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import runpy
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import report

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run_all.py", "report.py"}
BUDGET_SECONDS = 15 * 60  # issue 13: a full make bench on the 2-core development machine
BY_HAND = {"detector_cost"}
"""Scripts that time a code change against another commit (``--against REF``), not the product: run
only when ``--only`` names them (CI's quick pass does), never by ``make bench`` or ``--full``."""
LEFT_TO_FULL: dict[str, str] = {  # script: why make bench leaves it out, and the targets left unchecked
    "scoring_scale": "issue 12's one scoring interval of 20,000 laptops (targets <= 60 s and <= 1 GB) needs "
                     "stores of 1,000, 2,000 and 20,000 laptops over 72 h: building the 20,000 took 13-50 min here, "
                     "so it alone is well over 15 min; run it alone (python bench/scoring_scale.py --laptops N, "
                     "--store-dir DIR to keep the stores for later runs) or with run_all.py --full",
}
FULL_ARGUMENTS: dict[str, list[str]] = {"detection_quality": ["--full"]}
BESIDE: dict[str, str] = {"agent_cost": "detection_quality"}  # script with an idle phase: what runs in it
EXAMPLES = """\
examples:
  python bench/run_all.py                        what `make bench` runs (~15 min budget on 2 cores)
  python bench/run_all.py --only console_fleet   one benchmark, its figures in the same table
  python bench/run_all.py --quick                every benchmark at small sizes (CI; not quotable)
  python bench/run_all.py --markdown             also the table in Markdown, for the README"""


class Beside:
    """A counts-only benchmark run as a child process during another script's idle phase."""

    def __init__(self, script: Path, arguments: list[str], folder: Path) -> None:
        self.script, self.arguments = script, arguments
        self.figures, self.output = folder / f"{script.stem}.figures.jsonl", folder / f"{script.stem}.out"
        self.child: subprocess.Popen[bytes] | None = None
        self.began = 0.0

    def start(self) -> None:
        if self.child is not None:
            return
        print(f"== {' '.join([self.script.name, *self.arguments])} started beside it (load average "
              f"{load_average()}); its output follows once it ends", flush=True)
        self.began = time.monotonic()
        with self.output.open("wb") as out:
            self.child = subprocess.Popen([sys.executable, str(self.script), *self.arguments], cwd=HERE, stdout=out,
                                          stderr=subprocess.STDOUT,
                                          env={**os.environ, report.FIGURES_ENV: str(self.figures)})

    def finish(self) -> tuple[bool, float]:
        """Wait for the child; print its output, keep its figures: (whether it succeeded, its seconds)."""
        assert self.child is not None
        code = self.child.wait()
        seconds = time.monotonic() - self.began
        print(f"== {self.script.name} (beside the script above) ended after {seconds:.0f} s:", flush=True)
        print(self.output.read_text(errors="replace"), end="", flush=True)
        if self.figures.exists():
            report.PUBLISHED.extend(report.read_figures(self.figures))
        return code == 0, seconds


def chosen(scripts: list[Path], only: list[str] | None, sized_down: bool) -> tuple[list[Path], dict[str, str]]:
    """The scripts a run starts (``scripts`` already narrowed to ``only`` when given), and those it
    leaves out for size with why (LEFT_TO_FULL: only a ``make bench`` run, ``sized_down``, without
    ``--only``). BY_HAND scripts start only when ``only`` names them."""
    not_run = {p.stem: LEFT_TO_FULL[p.stem] for p in scripts if p.stem in LEFT_TO_FULL} if sized_down and not only else {}
    return [p for p in scripts if p.stem not in not_run and (p.stem not in BY_HAND or p.stem in (only or ()))], not_run


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every benchmark still runs (CI)")
    parser.add_argument("--full", action="store_true",
                        help="every script at its full sizes: detection quality over every seed, and "
                             f"{', '.join(LEFT_TO_FULL)} (well over an hour on 2 cores); without it the run is "
                             f"sized to finish within {BUDGET_SECONDS // 60} minutes and leaves those out")
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="where to write the figures as JSON "
                        "(default: bench/results.json)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these scripts (e.g. collector_ingest); named together, "
                        "agent_cost and detection_quality run as make bench runs them (the latter beside)")
    parser.add_argument("--markdown", action="store_true", help="also print the table in Markdown (for the README)")
    return parser.parse_args()


def commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return done.stdout.strip() or None


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def run_script(script: Path, arguments: list[str], seconds: dict[str, float]) -> bool:
    """Run one benchmark in this process (its figures land in report.PUBLISHED); False if it failed."""
    sys.argv = [str(script), *arguments]
    print(f"== {' '.join([script.name, *arguments])} (load average {load_average()})", flush=True)
    script_began = time.monotonic()
    succeeded = True
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # a script's `raise SystemExit(main())` must not end the run
        succeeded = done.code in (None, 0)
    except Exception as failure:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
        print(f"{script.name} failed: {failure!r}", file=sys.stderr)
        succeeded = False
    seconds[script.name] = round(time.monotonic() - script_began, 1)
    return succeeded


def main() -> int:
    args = arguments()
    if args.quick:
        os.environ[report.QUICK_ENV] = "1"
    if args.quick and args.full:
        print("--quick and --full contradict each other", file=sys.stderr)
        return 2
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))
    if args.only:
        unknown = sorted(set(args.only) - {p.stem for p in scripts})
        if unknown:
            print(f"no benchmark named {', '.join(unknown)} (known: {', '.join(p.stem for p in scripts)})",
                  file=sys.stderr)
            return 2
        scripts = [p for p in scripts if p.stem in args.only]
    given = FULL_ARGUMENTS if args.full else {}
    scripts, not_run = chosen(scripts, args.only, sized_down=not (args.quick or args.full))
    by_name = {p.stem: p for p in scripts}
    beside = {host: by_name[guest] for host, guest in BESIDE.items() if host in by_name and guest in by_name}
    scripts = [p for p in scripts if p not in beside.values()]
    started, load_before = datetime.now(timezone.utc), os.getloadavg()
    began = time.monotonic()
    failed: list[str] = []
    seconds: dict[str, float] = {}
    ran_beside: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="farmwatch-bench-") as scratch:
        for script in scripts:
            guest = beside.get(script.stem)
            companion = Beside(guest, given.get(guest.stem, []), Path(scratch)) if guest else None
            report.IDLE_PHASE_STARTED[:] = [companion.start] if companion else []
            if not run_script(script, given.get(script.stem, []), seconds):
                failed.append(script.name)
            report.IDLE_PHASE_STARTED.clear()
            if guest is None or companion is None:
                continue
            if companion.child is None:  # the host never reached its idle phase: run the guest alone
                if not run_script(guest, given.get(guest.stem, []), seconds):
                    failed.append(guest.name)
                continue
            succeeded, spent = companion.finish()
            seconds[guest.name], ran_beside[guest.stem] = round(spent, 1), script.stem
            if not succeeded:
                failed.append(guest.name)
    wall = time.monotonic() - began
    if not args.quick and not args.only:  # the whole of make bench, against issue 13's budget
        report.PUBLISHED.append(report.Figure(f"make bench{' --full' if args.full else ''} wall time", wall, "s",
                                              target=None if args.full else report.at_most(BUDGET_SECONDS),
                                              bench="run_all"))
    figures = report.PUBLISHED
    print(f"\n== every figure ({wall:.0f} s, load average {load_average()}"
          f"{', quick pass: sizes too small to quote' if args.quick else ''})")
    print(report.table(figures) if figures else "no figures published")
    for name, host in ran_beside.items():
        print(f"{name} ran beside {host}'s idle phase (its figures are counts, not timings)")
    for name, why in not_run.items():
        print(f"NOT RUN, its targets unchecked in this run: {name}: {why}")
    if args.markdown and figures:
        print("\n" + report.markdown(figures))
    results = {
        "started_at": started.isoformat(), "commit": commit(), "quick": args.quick, "full": args.full,
        "wall_seconds": round(wall, 1), "arguments": {p.stem: given.get(p.stem, []) for p in scripts},
        # Other work on the machine moves every figure; the load averages say how busy it was.
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": os.getloadavg()},
        "seconds": seconds, "ran_beside": ran_beside, "failed": failed, "not_run": not_run,
        "figures": [figure.as_json() for figure in figures],
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
