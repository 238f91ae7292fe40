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

Caveat: the simulator and the detectors were written by the same people from the same sources, so
these figures measure the detectors against the behaviour we modelled, not against real farms.

Targets (issue 5), checked on every held-out seed (the script exits 1 naming each one missed):
recall at farm >= 0.95, recall at farm-or-review >= 0.98, legitimate called farm <= 0.5 %, sent to
review <= 3 %.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import orjson

from farmwatch.detectors.config import DetectionConfig
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


def missed(figures: dict[str, float]) -> list[str]:
    """Each target ``figures`` misses, as ``name value (target)``."""
    found = []
    for name, (least, most) in TARGETS.items():
        value = figures[name]
        if least is not None and value < least:
            found.append(f"{name} {value:.3f} (target >= {least:g})")
        if most is not None and value > most:
            found.append(f"{name} {value:.3f} (target <= {most:g})")
    return found


def evaluate(seed: int, workdir: Path, verbose: bool = False, stealthy: bool = False,
             shared_egress: bool = False) -> dict[str, float]:
    """Simulate a fleet for ``seed``, score it, and compare the verdicts with the labels."""
    files = write_fleet(workdir / f"seed{seed}", seed, LEGIT, FARMS, DAYS, stealthy=stealthy,
                        shared_egress=shared_egress)
    with files.records.open("rb") as handle:
        records = [orjson.loads(line) for line in handle]
    config = DetectionConfig(corporate_networks=(CORPORATE_NETWORK,))
    verdicts = score(records, load_roster(files.roster), load_anchors(files.anchors),
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


def main() -> int:
    verbose = "-v" in sys.argv
    with tempfile.TemporaryDirectory(prefix="farmwatch-quality-") as tmp:
        runs = [("tuning seed", seed, False, False) for seed in (TUNING_SEED,)]
        runs += [("held-out seed", seed, False, False) for seed in REPORT_SEEDS]
        runs += [("stress (stealthy farms) seed", seed, True, False) for seed in STRESS_SEEDS]
        runs += [("shared-egress tuning seed", SHARED_EGRESS_TUNING_SEED, False, True)]
        runs += [("shared-egress held-out seed", seed, False, True) for seed in SHARED_EGRESS_SEEDS]
        misses = []
        for role, seed, stealthy, shared_egress in runs:
            began = time.perf_counter()
            figures = evaluate(seed, Path(tmp), verbose, stealthy, shared_egress)
            print(f"{role} {seed}: " + ", ".join(
                f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"
                for name, value in figures.items()) + f" ({time.perf_counter() - began:.0f} s)", flush=True)
            if seed in REPORT_SEEDS + SHARED_EGRESS_SEEDS:
                misses += [f"seed {seed}: {miss}" for miss in missed(figures)]
    print("targets on the held-out seeds: " + ("MISSED: " + "; ".join(misses) if misses else "all met"))
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
