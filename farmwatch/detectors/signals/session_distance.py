"""How far away is whoever drives this laptop? The kernel's minimum RTT of an inbound session.

An inbound remote-access connection or an RDP/VNC/SSH session is a direct path to the controller
(through any VPN it rides on: the RTT covers the whole path). Its minimum RTT bounds the distance
from above (light) and, with a conservative path model, makes a lower distance likely
(:func:`farmwatch.detectors.distance.likely_min_distance_km`). Relayed sessions are left out: the TCP
peer is the vendor's relay and its RTT says little about the operator.
"""

from __future__ import annotations

import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.distance import likely_min_distance_km, max_distance_km


class SessionDistanceDetector(Detector):
    """Sessions whose minimum RTT puts the controller farther than anyone local could be."""

    name = "session_distance"
    group = "distance"
    attack = "T1219"

    def __init__(self, local_km: float = 2000.0, far_km: float = 6000.0, top_score: float = 0.85,
                 min_reports: int = 2, approved_factor: float = 0.25) -> None:
        self.local_km = local_km
        self.far_km = far_km
        self.top_score = top_score
        self.min_reports = min_reports
        self.approved_factor = approved_factor

    def _paths(self, frames: Frames) -> pd.DataFrame:
        tools = frames.tools
        direct = tools[(tools["direction"] == "inbound") & tools["min_rtt_ms"].notna() & tools["live"]]
        sessions = frames.sessions
        remote = sessions[sessions["remote_ip"].notna() & sessions["min_rtt_ms"].notna()]
        return pd.concat([
            pd.DataFrame({"device_id": direct["device_id"], "rec": direct["rec"], "via": direct["tool"],
                          "peer": direct["remote_ip"], "min_rtt_ms": direct["min_rtt_ms"]}),
            pd.DataFrame({"device_id": remote["device_id"], "rec": remote["rec"], "via": remote["kind"],
                          "peer": remote["remote_ip"], "min_rtt_ms": remote["min_rtt_ms"]}),
        ], ignore_index=True)

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        paths = self._paths(frames)
        if paths.empty:
            return []
        paths["time"] = frames.times(paths)
        per_peer = paths.groupby(["device_id", "via", "peer"], sort=True).agg(
            min_rtt_ms=("min_rtt_ms", "min"), reports=("rec", "nunique"),
            first=("time", "min"), last=("time", "max")).reset_index()
        per_peer = per_peer[per_peer["reports"] >= self.min_reports]
        per_peer["likely_km"] = likely_min_distance_km(per_peer["min_rtt_ms"].to_numpy())
        found = []
        for device, peers in per_peer.groupby("device_id", sort=True):
            top = peers.sort_values(["likely_km", "reports"], ascending=False).iloc[0]
            strength = (top["likely_km"] - self.local_km) / (self.far_km - self.local_km)
            if strength <= 0:
                continue
            entry = context.roster.get(str(device))
            approved = entry is not None and top["via"] in entry.approved_tools
            score = self.top_score * min(strength, 1.0) * (self.approved_factor if approved else 1.0)
            summary = (
                f"The controller of the {top['via']} session from {top['peer']} is likely at least "
                f"{top['likely_km']:,.0f} km away (minimum RTT {top['min_rtt_ms']:.1f} ms over "
                f"{top['reports']} report(s)), consistent with someone "
                f"{'abroad' if top['likely_km'] >= self.far_km else 'far from the laptop'}"
                + (f" (the roster places the laptop in {entry.city or entry.country})" if entry else "") + "."
            )
            evidence = {
                "via": top["via"], "peer": top["peer"], "min_rtt_ms": top["min_rtt_ms"],
                "likely_min_km": top["likely_km"], "light_bound_km": max_distance_km(float(top["min_rtt_ms"])),
                "session_reports": top["reports"], "approved": approved,
            }
            found.append(self.finding(str(device), score, summary, evidence, top["first"], top["last"]))
        return found
