"""Is the laptop where the roster says? Latency to anchors with known coordinates.

A minimum RTT of ``r`` ms to an anchor puts the laptop within ``r x 100`` km of it (light in
fibre, :mod:`farmwatch.detectors.distance`). When the roster's coordinates are farther from the anchor than that, the
laptop cannot be there: proof, not inference, since RTT never shrinks below the light bound.
RTTs consistently far above what the claimed location makes plausible are weaker evidence
(congestion and VPN hairpins add RTT too), so they count for less and not on a VPN.
Travellers violate the bound for a while; a farm laptop does all the time, hence the share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.contract import RosterEntry
from farmwatch.detectors.base import Context, DeviceFinding, Detector, aggregated_columns, device_ids, device_runs
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.distance import (
    ACCESS_OVERHEAD_MS,
    SLOW_PATH_KM_PER_RTT_MS,
    great_circle_km,
    max_distance_km,
)


class LocationProofDetector(Detector):
    """Anchor RTTs that the roster's claimed location cannot explain."""

    name = "location_proof"
    group = "location"
    attack = None

    def __init__(self, slack_km: float = 150.0, proof_score: float = 0.95, full_violation_km: float = 1000.0,
                 slow_excess_ms: float = 40.0, slow_score: float = 0.3, min_reports: int = 6) -> None:
        self.slack_km = slack_km
        self.proof_score = proof_score
        self.full_violation_km = full_violation_km
        self.slow_excess_ms = slow_excess_ms
        self.slow_score = slow_score
        self.min_reports = min_reports

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        probes = frames.probes
        if probes.empty or not context.anchors:
            return []
        claimed = {d: e for d, e in context.roster.items() if e.latitude is not None and e.longitude is not None}
        # Coordinates per device and per anchor, spread to the probe rows by integer codes
        # (millions of rows: no per-row string lookups).
        device_codes, names = frames.reports["device_code"].to_numpy(), device_ids(frames.reports)
        device_place = np.array([(claimed[n].latitude, claimed[n].longitude) if n in claimed else (np.nan, np.nan)
                                 for n in names], dtype=float).reshape(-1, 2)
        targets, anchor_names = pd.factorize(probes["target"])
        anchors = context.anchors
        anchor_place = np.array([(anchors[n].latitude, anchors[n].longitude) if n in anchors else (np.nan, np.nan)
                                 for n in anchor_names], dtype=float).reshape(-1, 2)
        probe_devices = device_codes[probes["rec"].to_numpy()]
        usable = (probes["rtt_min_ms"].notna().to_numpy() & ~np.isnan(device_place[probe_devices, 0])
                  & (targets >= 0) & ~np.isnan(anchor_place[targets, 0]))
        probes = probes.loc[usable, ["rec", "target", "rtt_min_ms"]]  # only what is read below
        if probes.empty:
            return []
        # The claimed distance per device and anchor (a few anchors per device), spread to the
        # probe rows: the haversine once per pair, not once per probe.
        per_device, per_anchor = len(anchor_names), len(names)  # the device-major grid of pairs
        pair_km = np.asarray(great_circle_km(
            np.repeat(device_place[:, 0], per_device), np.repeat(device_place[:, 1], per_device),
            np.tile(anchor_place[:, 0], per_anchor), np.tile(anchor_place[:, 1], per_anchor)))
        claim_km = pair_km[probe_devices[usable] * len(anchor_names) + targets[usable]]
        probes["claim_km"] = claim_km
        probes["bound_km"] = max_distance_km(probes["rtt_min_ms"].to_numpy())
        probes["violation_km"] = probes["claim_km"] - probes["bound_km"] - self.slack_km
        probes["excess_ms"] = probes["rtt_min_ms"] - (ACCESS_OVERHEAD_MS + claim_km / SLOW_PATH_KM_PER_RTT_MS)
        per_report = aggregated_columns(probes.groupby("rec", sort=True), violation=("violation_km", "max"),
                                        excess=("excess_ms", "min"))
        recs = per_report.index.to_numpy()
        per_report["device_id"] = device_codes[recs]  # device codes (in id order) until the devices with a finding
        per_report["direct"] = ~frames.reports["has_vpn_interface"].to_numpy()[recs]
        per_report["violating"] = per_report["violation"] > 0
        per_report["slow"] = per_report["direct"] & (per_report["excess"] > self.slow_excess_ms)
        per_report["time"] = frames.reports["window_end"].array.take(recs)
        devices = aggregated_columns(
            per_report.groupby("device_id", sort=True),
            reports=("violation", "size"), violating=("violating", "sum"), direct=("direct", "sum"),
            slow=("slow", "sum"), first=("time", "min"), last=("time", "max"))
        too_slow = (devices["direct"] >= self.min_reports) & (devices["slow"] >= 0.9 * devices["direct"])
        # Only the devices with a finding get the per-device work below (which decides the same way).
        devices = devices[(devices["reports"] >= self.min_reports) & ((devices["violating"] > 0) | too_slow)]
        # Rows per device code: per_report is in rec order, so each device's rows are one run; the
        # probes are put in device order first (stable: each device's rows keep their order).
        report_rows = _runs(per_report["device_id"].to_numpy(), np.arange(len(per_report)))
        probe_codes = device_codes[probes["rec"].to_numpy()]
        in_order = np.argsort(probe_codes, kind="stable")
        probe_rows = _runs(probe_codes[in_order], in_order)
        # A violating device's rows are taken from these arrays, not as frames (iloc per device).
        probe_columns = {name: probes[name].to_numpy() for name in
                         ("rec", "target", "rtt_min_ms", "claim_km", "bound_km", "violation_km")}
        report_columns = {name: per_report[name].to_numpy() for name in ("violation", "violating")}
        found = []
        for code, row in devices.iterrows():
            device = names[code]
            report_rows_of, probe_rows_of = report_rows[code], probe_rows[code]
            entry = claimed[str(device)]
            if row["violating"]:
                mine = {name: column[probe_rows_of] for name, column in probe_columns.items()}
                reports_of = {name: column[report_rows_of] for name, column in report_columns.items()}
                found.append(self._proof(str(device), mine, reports_of, entry, frames))
            elif row["direct"] >= self.min_reports and row["slow"] >= 0.9 * row["direct"]:
                mine = per_report.iloc[report_rows_of]
                excess = float(mine.loc[mine["direct"], "excess"].median())
                summary = (f"Every anchor answers at least {excess:.0f} ms slower than a laptop in "
                           f"{entry.city or entry.country} plausibly would (median excess), in "
                           f"{row['slow'] / row['direct']:.0%} of {int(row['direct'])} reports.")
                evidence = {"kind": "too_slow", "median_excess_ms": excess, "reports": int(row["direct"])}
                found.append(self.finding(str(device), self.slow_score, summary, evidence, row["first"], row["last"]))
        return found

    def _proof(self, device: str, rows: dict[str, np.ndarray], per_report: dict[str, np.ndarray], entry: RosterEntry,
               frames: Frames) -> DeviceFinding:
        """The finding of a device with a violating report, from its probe ``rows`` and ``per_report``
        rows (columns as arrays, rows in frame order)."""
        violating = per_report["violating"]
        share = float(violating.mean())
        bad = np.flatnonzero(rows["violation_km"] > 0)
        violation = rows["violation_km"][bad]
        # The worst anchor: each anchor's first row of its largest violation, anchors in name order,
        # then the last after sorting those by violation (as a groupby idxmax, sort_values, iloc[-1]).
        _, anchor_of = np.unique(rows["target"][bad], return_inverse=True)
        by_anchor = np.lexsort((np.arange(len(bad)), -violation, anchor_of))
        firsts = by_anchor[np.flatnonzero(np.diff(anchor_of[by_anchor], prepend=-1))]
        at = bad[firsts[np.argsort(violation[firsts], kind="quicksort")[-1]]]
        worst = {name: column[at] for name, column in rows.items()}
        typical = float(np.median(per_report["violation"][violating]))
        strength = min(max(typical / self.full_violation_km, 0.3), 1.0)
        # Squared share: a week's trip (a third of reports) weighs a ninth, a farm laptop (all reports) fully.
        score = self.proof_score * share**2 * strength
        summary = (
            f"Anchor {worst['target']} answered in {worst['rtt_min_ms']:.1f} ms, so the laptop was within "
            f"{worst['bound_km']:,.0f} km of it, but the roster's {entry.city or entry.country} is "
            f"{worst['claim_km']:,.0f} km away: the laptop was elsewhere in {share:.0%} of {len(violating)} reports "
            f"(by at least {typical:,.0f} km typically)."
        )
        evidence = {
            "kind": "light_speed_violation", "anchor": worst["target"], "rtt_min_ms": worst["rtt_min_ms"],
            "bound_km": worst["bound_km"], "claimed_distance_km": worst["claim_km"],
            "typical_violation_km": typical, "violating_share": share, "reports": len(violating),
        }
        times = frames.reports["window_end"].array.take(rows["rec"][bad])
        return self.finding(device, score, summary, evidence, times.min(), times.max())


def _runs(codes: np.ndarray, rows: np.ndarray) -> dict[int, np.ndarray]:
    """``rows`` per device code, for ``codes`` (the codes of ``rows``) in device order."""
    first, count = device_runs(codes)
    return {int(codes[at]): rows[at:at + n] for at, n in zip(first, count)}
