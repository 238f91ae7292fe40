"""How far away is whoever drives this laptop? The kernel's minimum RTT of a remote session.

An inbound remote-access connection or an RDP/VNC/SSH session is a direct path to the controller
(through any VPN it rides on: the RTT covers the whole path). So is a remote-access tool's
outbound connection to a peer that is not one of the tool's catalogued relays (the connection's
``domain`` is empty): peer-to-peer, the laptop dials the operator's end. Its minimum RTT bounds the
distance from above (light) and, with a conservative path model, makes a lower distance likely
(:func:`farmwatch.detectors.distance.likely_min_distance_km`). Connections to a catalogued relay
are left out: the TCP peer is the vendor's data centre and its RTT says nothing about the operator.

A peer is usually needed in ``min_reports`` reports; a remote-access tool's peer whose likely
distance already reaches ``far_km`` (abroad: no one near the roster's claimed city answers that
slowly, the light-in-fibre floor from within ``local_km`` being ``local_km / 100`` ms) counts from
``far_tool_min_reports`` (one window: what ``farmwatch-agent verify`` sees). An outbound session
while the laptop's own keyboard and mouse are in use without injected input (in at least
``local_hands_share`` of its reports) is the employee reaching a machine elsewhere, not someone
driving this one: it scores ``local_hands_factor`` as much. A session the agent's socket watcher
saw last ``min_session_seconds`` (``duration_seconds``, e.g. one that began and ended between two
reports) counts from its one report too.

A slow access link (geostationary satellite: ~600 ms to everything) makes every peer look far, so
the time a path spends before it goes anywhere is the larger of the usual
:data:`~farmwatch.detectors.distance.ACCESS_OVERHEAD_MS` and, with ``anchor_floor``, the device's
fastest anchor answer: a laptop that reaches no anchor in under 600 ms shows no peer as far.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, aggregated_columns, device_ids
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.distance import (
    ACCESS_OVERHEAD_MS,
    LIGHT_KM_PER_RTT_MS,
    likely_min_distance_km,
    max_distance_km,
)


class SessionDistanceDetector(Detector):
    """Sessions whose minimum RTT puts the controller farther than anyone local could be."""

    name = "session_distance"
    group = "distance"
    attack = "T1219"

    def __init__(self, local_km: float = 2000.0, far_km: float = 6000.0, top_score: float = 0.85,
                 min_reports: int = 2, approved_factor: float = 0.25, far_tool_min_reports: int = 1,
                 local_hands_share: float = 0.5, local_hands_factor: float = 0.25,
                 min_session_seconds: float = 60.0, anchor_floor: bool = True) -> None:
        self.local_km = local_km
        self.far_km = far_km
        self.top_score = top_score
        self.min_reports = min_reports
        self.approved_factor = approved_factor
        self.far_tool_min_reports = far_tool_min_reports
        self.local_hands_share = local_hands_share
        self.local_hands_factor = local_hands_factor
        self.min_session_seconds = min_session_seconds
        self.anchor_floor = anchor_floor

    def _paths(self, frames: Frames) -> pd.DataFrame:
        tools = frames.tools
        # Inbound, or outbound to a peer that is no catalogued relay of the tool: a direct path.
        direct = tools[tools["live"] & tools["min_rtt_ms"].notna()
                       & ((tools["direction"] == "inbound") | tools["domain"].isna())]
        sessions = frames.sessions
        remote = sessions[sessions["remote_ip"].notna() & sessions["min_rtt_ms"].notna()]
        reports = frames.reports
        # The laptop's own hands at work: input in the window, none of it injected.
        local_hands = ((reports["key_events"].fillna(0) + reports["mouse_events"].fillna(0) > 0)
                       & (reports["injected_events"].fillna(0) == 0)).to_numpy()
        return pd.concat([
            pd.DataFrame({"device_id": direct["device_id"], "rec": direct["rec"], "via": direct["tool"],
                          "peer": direct["remote_ip"], "min_rtt_ms": direct["min_rtt_ms"], "tool": True,
                          "direction": direct["direction"], "duration_seconds": direct["duration_seconds"],
                          "local_hands": local_hands[direct["rec"].to_numpy()]}),
            pd.DataFrame({"device_id": remote["device_id"], "rec": remote["rec"], "via": remote["kind"],
                          "peer": remote["remote_ip"], "min_rtt_ms": remote["min_rtt_ms"], "tool": False,
                          "direction": "inbound", "duration_seconds": remote["duration_seconds"],
                          "local_hands": False}),
        ], ignore_index=True)

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        paths = self._paths(frames)
        if paths.empty:
            return []
        paths["time"] = frames.times(paths)
        # Grouped on device codes (in device id order), not id strings; the ids come back per peer.
        codes = frames.reports["device_code"].to_numpy()
        ids = device_ids(frames.reports)
        paths["device_id"] = codes[paths["rec"].to_numpy()]
        per_peer = aggregated_columns(
            paths.groupby(["device_id", "via", "peer", "direction"], sort=True),
            min_rtt_ms=("min_rtt_ms", "min"), reports=("rec", "nunique"), tool=("tool", "any"),
            local_hands_share=("local_hands", "mean"), first=("time", "min"), last=("time", "max"),
            session_seconds=("duration_seconds", "max")).reset_index()
        peer_codes = per_peer["device_id"].to_numpy()
        per_peer["device_id"] = ids[peer_codes]
        fastest_anchor = np.full(len(ids), np.nan)  # per device code; NaN: no probe answered
        if self.anchor_floor and len(frames.probes):
            probes = frames.probes
            minima = probes["rtt_min_ms"].groupby(codes[probes["rec"].to_numpy()]).min()
            fastest_anchor[minima.index.to_numpy()] = minima.to_numpy()
        per_peer["access_ms"] = pd.Series(fastest_anchor[peer_codes], index=per_peer.index).fillna(0.0).clip(
            lower=ACCESS_OVERHEAD_MS)
        # likely_min_distance_km spends ACCESS_OVERHEAD_MS itself: give it only what this device spends beyond.
        per_peer["likely_km"] = likely_min_distance_km(
            (per_peer["min_rtt_ms"] - per_peer["access_ms"] + ACCESS_OVERHEAD_MS).to_numpy())
        far_tool = per_peer["tool"] & (per_peer["likely_km"] >= self.far_km)
        per_peer = per_peer[(per_peer["reports"] >= self.min_reports)
                            | (far_tool & (per_peer["reports"] >= self.far_tool_min_reports))
                            | (per_peer["session_seconds"] >= self.min_session_seconds)]
        # The employee driving something elsewhere from this laptop: outbound, with their own hands.
        reaching_out = (per_peer["direction"] == "outbound") & (per_peer["local_hands_share"] >= self.local_hands_share)
        per_peer = per_peer.assign(weight=reaching_out.map({True: self.local_hands_factor, False: 1.0}))
        strength = ((per_peer["likely_km"] - self.local_km) / (self.far_km - self.local_km)).clip(upper=1.0)
        per_peer = per_peer.assign(strength=strength * per_peer["weight"])
        # Each device's strongest peer: one stable sort of all peers (ties keep the peers' order).
        tops = per_peer.sort_values(["device_id", "strength", "likely_km", "reports"],
                                    ascending=[True, False, False, False], kind="stable").drop_duplicates("device_id")
        found = []
        for at in np.flatnonzero(~(tops["strength"] <= 0).to_numpy()):  # NaN strength stays, as it always did
            top = tops.iloc[at]
            device = top["device_id"]
            entry = context.roster.get(str(device))
            approved = entry is not None and top["via"] in entry.approved_tools
            score = self.top_score * top["strength"] * (self.approved_factor if approved else 1.0)
            reaching_out = bool(top["weight"] < 1.0)
            summary = (
                f"The controller of the {top['via']} session {'to' if top['direction'] == 'outbound' else 'from'} "
                f"{top['peer']} is likely at least {top['likely_km']:,.0f} km away (minimum RTT "
                f"{top['min_rtt_ms']:.1f} ms over {top['reports']} report(s)"
                + ("" if pd.isna(top["session_seconds"]) else f", seen for {top['session_seconds']:.0f} s")
                + f"{', a direct peer, no catalogued relay' if top['tool'] else ''}), consistent "
                f"with someone {'abroad' if top['likely_km'] >= self.far_km else 'far from the laptop'}"
                + (f" (the roster places the laptop in {entry.city or entry.country})" if entry else "")
                + ("; the laptop's own keyboard and mouse were in use, so it may be the employee reaching "
                   "a machine elsewhere" if reaching_out else "") + "."
            )
            evidence = {
                "via": top["via"], "peer": top["peer"], "direction": top["direction"],
                "min_rtt_ms": top["min_rtt_ms"], "likely_min_km": top["likely_km"],
                "light_bound_km": max_distance_km(float(top["min_rtt_ms"])),
                "local_floor_ms": self.local_km / LIGHT_KM_PER_RTT_MS, "access_ms": float(top["access_ms"]),
                "session_reports": top["reports"], "approved": approved,
                "local_hands_share": float(top["local_hands_share"]),
                "session_seconds": None if pd.isna(top["session_seconds"]) else float(top["session_seconds"]),
            }
            found.append(self.finding(str(device), score, summary, evidence, top["first"], top["last"]))
        return found
