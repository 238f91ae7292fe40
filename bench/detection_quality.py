"""Detection quality on simulated fleets: recall on farms, and what legitimate employees suffer.

Tuning used seed 1 (the detector parameters were adjusted while looking at it). Seeds 2-4 were
held out at first, then looked at once (two travellers abroad went to review there, which led to
the host_mismatch travel fix), so they are no longer clean; seeds 5-7 were not looked at before
the figures below were first printed and are the ones to quote. The stress run (``--stealthy``
farms: own lines, US hours, roster address at the farm, a good link) shows where detection ends;
it has no target.

The shared-egress variant (issue 16, ``farmwatch-simulate --shared-egress``) moves about a third of
the plain employees behind carrier-grade NAT (5G home internet, satellite, fixed wireless) or a
consumer VPN, where colleagues share public addresses by chance, and some farm sites behind 5G home
internet or onto agents that report no LAN identity. Its tuning seed is 11, its held-out seeds
12-16 (not looked at while the colocation detector was changed), checked against the same targets;
``legit CGNAT/VPN called farm`` counts the converted employees among those called farm.

Per variant (issue 16): every variant of the simulator -- its own fleet, shared egress, and the
tactics farms move to (``farmwatch-simulate --tactic``: tampering, vps-hop, kvm-reflashed, in-city),
and all of them at once -- over the report seeds 22-26, which nobody looked at while tuning. The
tactics and their detectors (agent_health's stopped/re-enrolled/restarted parts, input_rhythm's
too-regular typing, the capture dongle's EDID) were tuned on seed 21 only; the earlier detectors on
seeds 1-4 and 11. Issue 16's targets, checked per seed: recall at farm >= 0.97, at farm-or-review
1.00, no legitimate laptop called farm, at most 2 % sent to review. The per-variant table is printed
in Markdown.

What runs: by default (``make bench``) every variant over seed 22 only, so the whole of ``make bench``
fits its 15 minutes; ``--seeds N`` takes the first N report seeds, and ``--full`` is the whole sweep
(the issue-5 runs below and every variant over seeds 22-26, about 25 minutes on a 2-core machine),
the run the README's per-variant table quotes. ``--variant NAME`` (repeatable) runs only the
variants named. Fleets are scored side by side (``--jobs``, one process each).

Caveat: the simulator and the detectors were written by the same people from the same sources, so
these figures measure the detectors against the behaviour we modelled, not against real farms.

Targets (issue 5), checked with ``--full`` on every held-out seed (the script exits 1 naming each one
missed, as it does for issue 16's):
recall at farm >= 0.95, recall at farm-or-review >= 0.98, legitimate called farm <= 0.5 %, sent to
review <= 3 %.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from report import Figure, at_least, at_most, publish, quick

from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import read_records
from farmwatch.detectors.pipeline import score
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.places import CORPORATE_NETWORK

TUNING_SEED = 1
REPORT_SEEDS = (5, 6, 7)
STRESS_SEEDS = (8,)
SHARED_EGRESS_TUNING_SEED = 11
SHARED_EGRESS_SEEDS = (12, 13, 14, 15, 16)
SHARED_EGRESS_KINDS = ("cgnat-", "consumer-vpn")
LEGIT, FARMS, DAYS = 170, 36, 5
TARGETS = {  # figure: (at least, at most)
    "recall (farm)": (0.95, None),
    "recall (farm or review)": (0.98, None),
    "legit called farm": (None, 0.005),
    "legit sent to review": (None, 0.03),
}
VARIANT_TARGETS = {  # issue 16
    "recall (farm)": (0.97, None),
    "recall (farm or review)": (1.0, None),
    "legit called farm": (None, 0.0),
    "legit sent to review": (None, 0.02),
}
TACTICS_TUNING_SEED = 21
VARIANT_SEEDS = (22, 23, 24, 25, 26)
VARIANTS: dict[str, tuple[bool, tuple[str, ...]]] = {  # name: (shared egress, tactics)
    "simulator's own fleet": (False, ()),
    "shared egress": (True, ()),
    "tampering": (False, ("tampering",)),
    "vps-hop": (False, ("vps-hop",)),
    "kvm-reflashed": (False, ("kvm-reflashed",)),
    "in-city": (False, ("in-city",)),
    "all at once": (True, ("tampering", "vps-hop", "kvm-reflashed", "in-city")),
}


def missed(figures: dict[str, float], targets: dict[str, tuple[float | None, float | None]] = TARGETS) -> list[str]:
    """Each target ``figures`` misses, as ``name value (target)``."""
    found = []
    for name, (least, most) in targets.items():
        value = figures[name]
        if least is not None and value < least:
            found.append(f"{name} {value:.3f} (target >= {least:g})")
        if most is not None and value > most:
            found.append(f"{name} {value:.3f} (target <= {most:g})")
    return found


def evaluate(seed: int, workdir: Path, verbose: bool = False, stealthy: bool = False,
             shared_egress: bool = False, tactics: tuple[str, ...] = ()) -> dict[str, float]:
    """Simulate a fleet for ``seed``, score it, and compare the verdicts with the labels."""
    files = write_fleet(workdir / f"seed{seed}", seed, LEGIT, FARMS, DAYS, stealthy=stealthy,
                        shared_egress=shared_egress, tactics=tactics)
    config = DetectionConfig(corporate_networks=(CORPORATE_NETWORK,))
    # Streamed into score(), which parses with the garbage collector paused (as farmwatch-detect does):
    # a list of every parsed record built first, with the collector on, was a third of a fleet's time.
    verdicts = score(read_records(files.records), load_roster(files.roster), load_anchors(files.anchors),
                     datetime(2026, 11, 2 + DAYS, tzinfo=timezone.utc), config)
    with files.labels.open() as handle:
        labels = {row["device_id"]: row for row in csv.DictReader(handle)}
    outcome = Counter((labels[v.device_id]["label"], v.verdict) for v in verdicts)
    farms = sum(n for (label, _), n in outcome.items() if label == "farm")
    legit = sum(n for (label, _), n in outcome.items() if label == "legit")
    if verbose:
        for v in verdicts:
            truth = labels[v.device_id]
            if v.verdict != ("farm" if truth["label"] == "farm" else "clear"):
                print(f"  {truth['label']:5} {truth['kind']:28} -> {v.verdict:6} risk {v.risk:.2f}: " + "; ".join(
                    f"{f.detector} {f.score:.2f}" for f in v.findings))
    converted = [v for v in verdicts if labels[v.device_id]["label"] == "legit"
                 and any(k in labels[v.device_id]["kind"] for k in SHARED_EGRESS_KINDS)]
    figures: dict[str, float] = {
        "farm devices": farms,
        "legit devices": legit,
        "recall (farm)": outcome["farm", "farm"] / farms,
        "recall (farm or review)": (outcome["farm", "farm"] + outcome["farm", "review"]) / farms,
        "legit called farm": outcome["legit", "farm"] / legit,
        "legit sent to review": outcome["legit", "review"] / legit,
        # Margins: how close the riskiest employee and the quietest farm came to the thresholds.
        "max legit risk": max(v.risk for v in verdicts if labels[v.device_id]["label"] == "legit"),
        "min farm risk": min(v.risk for v in verdicts if labels[v.device_id]["label"] == "farm"),
    }
    if converted:
        figures["legit CGNAT/VPN"] = len(converted)
        figures["legit CGNAT/VPN called farm"] = sum(v.verdict == "farm" for v in converted)
        figures["legit CGNAT/VPN sent to review"] = sum(v.verdict == "review" for v in converted)
    return figures


Run = tuple[str, int, bool, bool, tuple[str, ...]]  # (what it is, seed, stealthy, shared egress, tactics)


def evaluate_all(runs: list[Run], verbose: bool, jobs: int) -> list[dict[str, float]]:
    """:func:`evaluate` each run, ``jobs`` at a time, each in its own process (a fleet is scored on
    one core; these figures are counts of verdicts, not timings, so running side by side changes
    nothing in them). The figures come back in the order of ``runs``; each run's line is printed
    as it finishes."""

    def one(run: Run) -> dict[str, float]:
        role, seed, stealthy, shared_egress, tactics = run
        spec = {"seed": seed, "stealthy": stealthy, "shared_egress": shared_egress, "tactics": list(tactics),
                "verbose": verbose}
        began = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--evaluate", json.dumps(spec)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{role} seed {seed}: scoring failed\n{done.stderr[-3000:]}")
        *said, answer = done.stdout.rstrip("\n").split("\n")
        figures: dict[str, float] = json.loads(answer)
        print("\n".join([*said, f"{role} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
                         + f" ({time.perf_counter() - began:.0f} s)"]), flush=True)
        return figures

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))


def seeds_label(seeds: tuple[int, ...]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def variant_table(verbose: bool, only: list[str], seeds: tuple[int, ...], jobs: int) -> tuple[list[str], list[str]]:
    """Every variant (those in ``only`` when given) over ``seeds``: the Markdown table's lines and
    the targets missed; publishes each variant's figures against issue 16's targets."""
    names = [name for name in VARIANTS if not only or name in only]
    runs: list[Run] = [(name, seed, False, *VARIANTS[name]) for name in names for seed in seeds]
    results = iter(evaluate_all(runs, verbose, jobs))
    lines = [f"| variant ({seeds_label(seeds)}) | farm laptops | recall (farm) | recall (farm or review) "
             "| legit called farm | legit sent to review | riskiest legit | quietest farm |",
             "|---|---|---|---|---|---|---|---|"]
    misses, figures_out = [], []
    for name in names:
        runs_of = [next(results) for _ in seeds]
        misses += [f"{name} seed {seed}: {miss}" for seed, figures in zip(seeds, runs_of)
                   for miss in missed(figures, VARIANT_TARGETS)]
        farms = sum(r["farm devices"] for r in runs_of)
        legit = sum(r["legit devices"] for r in runs_of)
        caught = sum(r["recall (farm)"] * r["farm devices"] for r in runs_of)
        flagged = sum(r["recall (farm or review)"] * r["farm devices"] for r in runs_of)
        called = sum(r["legit called farm"] * r["legit devices"] for r in runs_of)
        reviewed = [r["legit sent to review"] for r in runs_of]
        lines.append(f"| {name} | {farms:.0f} | {caught / farms:.3f} | {flagged / farms:.3f} | {called:.0f} of "
                     f"{legit:.0f} | {sum(x * r['legit devices'] for x, r in zip(reviewed, runs_of)) / legit:.1%} "
                     f"({min(reviewed):.1%}-{max(reviewed):.1%} per seed) | "
                     f"{max(r['max legit risk'] for r in runs_of):.2f} | {min(r['min farm risk'] for r in runs_of):.2f} |")
        label = f"{name} ({seeds_label(seeds)})"
        figures_out += [Figure(f"{label}: recall (farm)", caught / farms, "of farms", target=at_least(0.97)),
                        Figure(f"{label}: recall (farm or review)", flagged / farms, "of farms", target=at_least(1.0)),
                        Figure(f"{label}: legit called farm", called, "laptops", target=at_most(0)),
                        Figure(f"{label}: legit sent to review, worst seed", max(reviewed) * 100, "%",
                               target=at_most(2.0))]
    publish(figures_out)
    return lines, misses


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help=f"the whole sweep (about 25 min on a 2-core machine): the issue-5 runs (tuning seed "
                             f"{TUNING_SEED}, held-out seeds {REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]}, stress seed "
                             f"{STRESS_SEEDS[0]}, shared-egress seeds {SHARED_EGRESS_TUNING_SEED}-"
                             f"{SHARED_EGRESS_SEEDS[-1]}) and every variant over seeds {VARIANT_SEEDS[0]}-"
                             f"{VARIANT_SEEDS[-1]}. Without it (what make bench runs): every variant over seed "
                             f"{VARIANT_SEEDS[0]} only")
    parser.add_argument("--seeds", type=int, choices=range(1, len(VARIANT_SEEDS) + 1), metavar="N",
                        help=f"score each variant over the first N of seeds {VARIANT_SEEDS[0]}-{VARIANT_SEEDS[-1]} "
                             f"(default 1; {len(VARIANT_SEEDS)} with --full)")
    parser.add_argument("--variants-only", action="store_true", help="with --full: skip the issue-5 runs")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME", choices=list(VARIANTS),
                        help="run only this variant (repeatable): " + ", ".join(repr(v) for v in VARIANTS))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                        help="fleets scored at once, each in its own process (default: the cores, at most 2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every device called wrongly")
    parser.add_argument("--evaluate", metavar="JSON", help="internal: score one fleet, print its figures as JSON")
    return parser.parse_args()


def main() -> int:
    args = arguments()
    if args.evaluate:
        spec = json.loads(args.evaluate)
        with tempfile.TemporaryDirectory(prefix="farmwatch-quality-") as tmp:
            figures = evaluate(spec["seed"], Path(tmp), spec["verbose"], spec["stealthy"], spec["shared_egress"],
                               tuple(spec["tactics"]))
        print(json.dumps(figures))
        return 0
    seeds = VARIANT_SEEDS[:1] if quick() else VARIANT_SEEDS[:args.seeds or (len(VARIANT_SEEDS) if args.full else 1)]
    misses: list[str] = []
    if args.full and not args.variants_only and not args.variant and not quick():
        runs: list[Run] = [("tuning seed", TUNING_SEED, False, False, ())]
        runs += [("held-out seed", seed, False, False, ()) for seed in REPORT_SEEDS]
        runs += [("stress (stealthy farms) seed", seed, True, False, ()) for seed in STRESS_SEEDS]
        runs += [("shared-egress tuning seed", SHARED_EGRESS_TUNING_SEED, False, True, ())]
        runs += [("shared-egress held-out seed", seed, False, True, ()) for seed in SHARED_EGRESS_SEEDS]
        for (_, seed, _, _, _), figures in zip(runs, evaluate_all(runs, args.verbose, args.jobs)):
            if seed in REPORT_SEEDS + SHARED_EGRESS_SEEDS:
                misses += [f"seed {seed}: {miss}" for miss in missed(figures)]
    lines, variant_misses = variant_table(args.verbose, args.variant, seeds, args.jobs)
    print("\n".join(lines))
    misses += variant_misses
    print("targets: " + ("MISSED: " + "; ".join(misses) if misses else "all met"))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
