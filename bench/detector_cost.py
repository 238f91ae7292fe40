"""CPU per device of each detector (fit + detect) against another commit's detectors, and whether
every finding is byte-identical.

Three simulated fleets (farmwatch.simulator): 300 laptops over 3 days (seed 21), 55 over 4 days with
every tactic (seed 22), 55 over 4 days (seed 23). Each is flattened once per side; each detector is
fitted and run ``--repeats`` times on the frames and its best CPU time is kept (CPU, not wall: the
machine is shared). The baseline is the same measurement on the code of ``--against`` (a git ref,
default HEAD: what the working tree changed), checked out into a temporary worktree and run in its
own process right before this tree's, so both sides see about the same load (printed beside them).
Every detector's findings (wire JSON, keys sorted) must be byte-identical on both sides: a speed-up
may not move a verdict. Exits 1 when any differs.

Not part of ``make bench`` (it times code changes, not the product): run it by hand before and after
changing a detector::

    .venv/bin/python bench/detector_cost.py --against main~3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Figure, publish, quick  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FLEETS: dict[str, dict[str, Any]] = {
    "300 laptops, 3 days, seed 21": {"seed": 21, "legit": 250, "farms": 50, "days": 3},
    "55 laptops, 4 days, seed 22, every tactic": {"seed": 22, "legit": 45, "farms": 10, "days": 4, "tactics": "all"},
    "55 laptops, 4 days, seed 23": {"seed": 23, "legit": 45, "farms": 10, "days": 4},
}
QUICK_FLEETS = {"20 laptops, 2 days, seed 21": {"seed": 21, "legit": 16, "farms": 4, "days": 2}}


def write_fleets(folder: Path) -> dict[str, Path]:
    """Simulate each fleet into its own folder under ``folder`` (with this tree's simulator, so both
    sides read the same records)."""
    from farmwatch.simulator.cli import write_fleet
    from farmwatch.simulator.tactics import TACTICS

    written = {}
    for index, (name, spec) in enumerate((QUICK_FLEETS if quick() else FLEETS).items()):
        tactics = tuple(sorted(TACTICS)) if spec.get("tactics") == "all" else ()
        out = folder / f"fleet-{index}"
        write_fleet(out, seed=spec["seed"], legit=spec["legit"], farms=spec["farms"], days=spec["days"],
                    tactics=tactics)
        written[name] = out
    return written


def measure(fleets: dict[str, Path], repeats: int) -> dict[str, Any]:
    """Per fleet and detector: best CPU milliseconds per device and the findings, with the
    ``farmwatch`` this process imports (the side under test)."""
    import gc

    import orjson

    from farmwatch.contract import to_wire
    from farmwatch.detectors.base import Context
    from farmwatch.detectors.config import DetectionConfig
    from farmwatch.detectors.frame import flatten
    from farmwatch.detectors.registry import REGISTRY
    from farmwatch.roster import load_anchors, load_roster

    result: dict[str, Any] = {"ms_per_device": {}, "findings": {}}
    for name, folder in fleets.items():
        records = [orjson.loads(line) for line in (folder / "records.jsonl").open("rb")]
        now = max(datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")) for r in records) + timedelta(seconds=30)
        context = Context(roster={e.device_id: e for e in load_roster(folder / "roster.csv")},
                          anchors={a.name: a for a in load_anchors(folder / "anchors.csv")}, now=now,
                          config=DetectionConfig())
        frames = flatten(records)
        del records
        devices = frames.reports["device_id"].nunique()
        gc.disable()  # as the pipeline pauses it: no collector pass lands inside one detector's time
        for detector, kind in REGISTRY.items():
            best = float("inf")
            for _ in range(repeats):
                began = time.process_time()
                found = kind().fit(frames, context).detect(frames, context)
                best = min(best, time.process_time() - began)
            result["ms_per_device"].setdefault(name, {})[detector] = 1000 * best / devices
            result["findings"].setdefault(name, {})[detector] = [
                [item.device_id, orjson.dumps(to_wire(item.finding), option=orjson.OPT_SORT_KEYS).decode()]
                for item in found]
        gc.enable()
    return result


def run_side(tree: Path, fleets: Path, repeats: int, out: Path) -> tuple[dict[str, Any], str]:
    """:func:`measure` in a child process importing ``farmwatch`` from ``tree``; returns its result
    and the load average before it ran."""
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, __file__, "--measure", str(fleets), str(out), "--repeats", str(repeats)],
                   env=env, cwd=tree, check=True)
    return json.loads(out.read_text()), load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD", help="git ref whose detectors are the baseline (default HEAD)")
    parser.add_argument("--repeats", type=int, default=1 if quick() else 3,
                        help="runs of each detector per fleet; the best CPU time counts (default 3)")
    parser.add_argument("--measure", nargs=2, metavar=("FLEETS", "OUT"), help=argparse.SUPPRESS)  # one side
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.measure:
        folder, out = map(Path, args.measure)
        fleets = json.loads((folder / "fleets.json").read_text())
        Path(out).write_text(json.dumps(measure({name: Path(path) for name, path in fleets.items()}, args.repeats)))
        return 0
    with tempfile.TemporaryDirectory(prefix="farmwatch-detector-cost-") as tmp:
        scratch = Path(tmp)
        baseline_tree = scratch / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(baseline_tree),
                        args.against], check=True)
        try:
            fleets = write_fleets(scratch)
            (scratch / "fleets.json").write_text(json.dumps({name: str(path) for name, path in fleets.items()}))
            before, before_load = run_side(baseline_tree, scratch, args.repeats, scratch / "before.json")
            after, after_load = run_side(ROOT, scratch, args.repeats, scratch / "after.json")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)], check=True)
    print(f"load average: {before_load} before the baseline ({args.against}), {after_load} before this tree")
    figures, differ = [], []
    for fleet, costs in after["ms_per_device"].items():
        for detector, cost in costs.items():
            figures.append(Figure(f"{detector}, {fleet}", cost, "ms CPU/device", before["ms_per_device"][fleet][detector],
                                  f"the detector at {args.against}, same fleet, same run"))
            if after["findings"][fleet][detector] != before["findings"][fleet][detector]:
                differ.append(f"{detector} on {fleet}")
        figures.append(Figure(f"all detectors, {fleet}", sum(costs.values()), "ms CPU/device",
                              sum(before["ms_per_device"][fleet].values()),
                              f"the detectors at {args.against}, same fleet, same run"))
    publish(figures)
    findings = sum(len(found) for by_detector in after["findings"].values() for found in by_detector.values())
    if differ:
        print(f"findings DIFFER from {args.against}: {'; '.join(differ)}")
        return 1
    print(f"findings byte-identical to {args.against}: {findings} findings on {len(after['findings'])} fleet(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
