"""Is the laptop where the roster says? Latency to anchors with known coordinates.

A minimum RTT of ``r`` ms to an anchor puts the laptop within ``r x 100`` km of it (light in
fibre, signals.md). When the roster's coordinates are farther from the anchor than that, the
laptop cannot be there: proof, not inference, since RTT never shrinks below the light bound.
RTTs consistently far above what the claimed location makes plausible are weaker evidence
(congestion and VPN hairpins add RTT too), so they count for less and not on a VPN.
Travellers violate the bound for a while; a farm laptop does all the time, hence the share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.contract import RosterEntry
from farmwatch.detectors.base import Context, DeviceFinding, Detector
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.geo import (
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
        probes = probes[probes["rtt_min_ms"].notna() & probes["target"].isin(list(context.anchors))].copy()
        claimed = {d: e for d, e in context.roster.items() if e.latitude is not None and e.longitude is not None}
        probes = probes[probes["device_id"].isin(list(claimed))]
        if probes.empty:
            return []
        anchors = context.anchors
        probes["claim_lat"] = probes["device_id"].map(lambda d: claimed[d].latitude)
        probes["claim_lon"] = probes["device_id"].map(lambda d: claimed[d].longitude)
        probes["anchor_lat"] = probes["target"].map(lambda a: anchors[a].latitude)
        probes["anchor_lon"] = probes["target"].map(lambda a: anchors[a].longitude)
        claim_km = great_circle_km(probes["claim_lat"].to_numpy(), probes["claim_lon"].to_numpy(),
                                   probes["anchor_lat"].to_numpy(), probes["anchor_lon"].to_numpy())
        probes["claim_km"] = claim_km
        probes["bound_km"] = max_distance_km(probes["rtt_min_ms"].to_numpy())
        probes["violation_km"] = probes["claim_km"] - probes["bound_km"] - self.slack_km
        probes["excess_ms"] = probes["rtt_min_ms"] - (ACCESS_OVERHEAD_MS + claim_km / SLOW_PATH_KM_PER_RTT_MS)
        vpn = frames.reports["has_vpn_interface"].to_numpy()
        probes["vpn"] = vpn[probes["rec"].to_numpy()]
        probes["time"] = frames.times(probes)
        found = []
        for device, rows in probes.groupby("device_id", sort=True):
            per_report = rows.groupby("rec").agg(violation=("violation_km", "max"), excess=("excess_ms", "min"),
                                                 vpn=("vpn", "first"))
            if len(per_report) < self.min_reports:
                continue
            entry = claimed[str(device)]
            violating = per_report["violation"] > 0
            if violating.any():
                found.append(self._proof(str(device), rows, per_report, violating, entry))
                continue
            direct = per_report[~per_report["vpn"]]
            if len(direct) >= self.min_reports and (direct["excess"] > self.slow_excess_ms).mean() >= 0.9:
                excess = float(direct["excess"].median())
                summary = (f"Every anchor answers at least {excess:.0f} ms slower than a laptop in "
                           f"{entry.city or entry.country} plausibly would (median excess), in "
                           f"{(direct['excess'] > self.slow_excess_ms).mean():.0%} of {len(direct)} reports.")
                found.append(self.finding(str(device), self.slow_score, summary,
                                          {"kind": "too_slow", "median_excess_ms": excess, "reports": len(direct)},
                                          rows["time"].min(), rows["time"].max()))
        return found

    def _proof(self, device: str, rows: pd.DataFrame, per_report: pd.DataFrame, violating: pd.Series,
               entry: RosterEntry) -> DeviceFinding:
        share = float(violating.mean())
        bad = rows[rows["violation_km"] > 0]
        worst = bad.loc[bad.groupby("target")["violation_km"].idxmax()].sort_values("violation_km").iloc[-1]
        typical = float(np.median(per_report.loc[violating, "violation"]))
        strength = min(max(typical / self.full_violation_km, 0.3), 1.0)
        # Squared share: a week's trip (a third of reports) weighs a ninth, a farm laptop (all reports) fully.
        score = self.proof_score * share**2 * strength
        summary = (
            f"Anchor {worst['target']} answered in {worst['rtt_min_ms']:.1f} ms, so the laptop was within "
            f"{worst['bound_km']:,.0f} km of it, but the roster's {entry.city or entry.country} is "
            f"{worst['claim_km']:,.0f} km away: the laptop was elsewhere in {share:.0%} of {len(per_report)} reports "
            f"(by at least {typical:,.0f} km typically)."
        )
        evidence = {
            "kind": "light_speed_violation", "anchor": worst["target"], "rtt_min_ms": worst["rtt_min_ms"],
            "bound_km": worst["bound_km"], "claimed_distance_km": worst["claim_km"],
            "typical_violation_km": typical, "violating_share": share, "reports": len(per_report),
        }
        return self.finding(device, score, summary, evidence, bad["time"].min(), bad["time"].max())
