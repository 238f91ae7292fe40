"""Many employees' laptops on one network at the same time: the decisive fleet signal.

Devices of *different* employees that report from the same egress IP, gateway MAC hash or Wi-Fi
BSSID hash in the same hour are linked; linked devices form clusters (connected components).
A cluster is weighed by its size (a couple is two people; a farm is more, design README), by the
kind of network (a LAN identity beats a shared egress IP; mobile egress is often carrier-grade NAT
shared by strangers), by persistence (farm laptops never leave; coworking visitors and office
neighbours are there part of the time) and by whether the roster places its members in different
cities. Company egress (office, corporate VPN) is skipped. Every member gets the finding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.distance import great_circle_km
from farmwatch.detectors.networks import corporate_mask

KIND_WEIGHT = {"gateway_mac": 1.0, "wifi_bssid": 1.0, "egress_ip": 0.8, "egress_ip_mobile": 0.3}
"""How much sharing one network identity means: a LAN identity is a room; mobile egress is often CGNAT."""


class _Components:
    """Union-find over device ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        self.parent[item] = root
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


class ColocationDetector(Detector):
    """Clusters of different employees' devices sharing a network, weighed by size and persistence."""

    name = "colocation"
    group = "colocation"
    attack = None

    def __init__(self, min_overlap_hours: int = 4, size_scores: tuple[float, ...] = (0.0, 0.0, 0.2, 0.55, 0.7, 0.8),
                 full_persistence: float = 0.8, apart_km: float = 100.0, apart_bonus: float = 0.15,
                 max_score: float = 0.95) -> None:
        self.min_overlap_hours = min_overlap_hours
        self.size_scores = size_scores
        self.full_persistence = full_persistence
        self.apart_km = apart_km
        self.apart_bonus = apart_bonus
        self.max_score = max_score

    def _sightings(self, frames: Frames, context: Context) -> pd.DataFrame:
        """(kind, key code, device, hour) for every network identity seen outside company networks."""
        reports = frames.reports[~corporate_mask(frames, context.config.corporate_networks)]
        mobile = reports["network_kind"].eq("mobile").to_numpy()
        devices, hours = reports["device_id"].to_numpy(), reports["hour"].to_numpy()
        keyed = (
            (np.where(mobile, "egress_ip_mobile", "egress_ip"), reports["source_ip"].to_numpy()),
            ("gateway_mac", reports["gateway_mac_hash"].to_numpy()),
            ("wifi_bssid", reports["wifi_bssid_hash"].to_numpy()),
        )
        rows = []
        for kind, keys in keyed:
            # Integer codes instead of 64-character hashes: the joins below then run on numbers.
            codes = pd.factorize(keys, use_na_sentinel=True)[0]
            part = pd.DataFrame({"kind": kind, "key": codes, "device_id": devices, "hour": hours})
            rows.append(part[codes >= 0])
        seen = pd.concat(rows, ignore_index=True)
        seen["kind"] = seen["kind"].astype("category")
        return seen.drop_duplicates()

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        seen = self._sightings(frames, context)
        employee = {d: e.employee_id for d, e in context.roster.items()}
        seen = seen[seen.groupby(["kind", "key", "hour"])["device_id"].transform("nunique") >= 2]
        if seen.empty:
            return []
        pairs = seen.merge(seen, on=["kind", "key", "hour"])
        pairs = pairs[pairs["device_id_x"] < pairs["device_id_y"]]
        pairs = pairs[pairs["device_id_x"].map(lambda d: employee.get(d, d))
                      != pairs["device_id_y"].map(lambda d: employee.get(d, d))]
        together = pairs.groupby(["device_id_x", "device_id_y"]).agg(
            hours=("hour", "nunique"), first=("hour", "min"), last=("hour", "max"))
        together = together[together["hours"] >= self.min_overlap_hours].reset_index()
        if together.empty:
            return []
        components = _Components()
        for a, b in zip(together["device_id_x"], together["device_id_y"]):
            components.union(a, b)
        linked = pairs.merge(together[["device_id_x", "device_id_y"]], on=["device_id_x", "device_id_y"])
        columns = ["device_id", "kind", "key", "hour"]
        shared = pd.concat([linked[[side, "kind", "key", "hour"]].set_axis(columns, axis=1)
                            for side in ("device_id_x", "device_id_y")])
        hours_total = frames.reports.groupby("device_id")["hour"].nunique()
        hours_shared = shared.groupby("device_id")["hour"].nunique()
        best_kind = shared.groupby("device_id")["kind"].agg(lambda kinds: max(KIND_WEIGHT[k] for k in set(kinds)))
        clusters: dict[str, list[str]] = {}
        for device in sorted(set(together["device_id_x"]) | set(together["device_id_y"])):
            clusters.setdefault(components.find(device), []).append(device)
        found = []
        for members in clusters.values():
            found.extend(self._cluster(members, together, hours_total, hours_shared, best_kind, shared, context))
        return found

    def _cluster(self, members: list[str], together: pd.DataFrame, hours_total: pd.Series, hours_shared: pd.Series,
                 best_kind: pd.Series, shared: pd.DataFrame, context: Context) -> list[DeviceFinding]:
        employees = sorted({context.roster[d].employee_id if d in context.roster else d for d in members})
        size = len(employees)
        base = self.size_scores[min(size, len(self.size_scores) - 1)]
        persistence = float(np.median([hours_shared.get(d, 0) / max(hours_total.get(d, 1), 1) for d in members]))
        kind_weight = float(max(best_kind.get(d, 0.0) for d in members))
        apart = self._apart(members, context)
        score = base * kind_weight * min(max(persistence / self.full_persistence, 0.3), 1.0)
        score = min(score + (self.apart_bonus if apart and score > 0 else 0.0), self.max_score)
        inside = together[together["device_id_x"].isin(members)]
        kinds = sorted(set(shared.loc[shared["device_id"].isin(members), "kind"]))
        evidence = {
            "cluster_size": size, "devices": members[:20], "employees": employees[:20], "shared": kinds,
            "overlap_hours_median": float(inside["hours"].median()), "persistence": persistence,
            "network_weight": kind_weight, "claimed_locations_apart": apart,
        }
        summary = (f"{size} employees' laptops ({', '.join(members[:6])}{'…' if len(members) > 6 else ''}) "
                   f"shared a network ({', '.join(kinds)}) at the same time for a median "
                   f"{evidence['overlap_hours_median']:.0f} h, {persistence:.0%} of their time"
                   + (", though the roster places them in different cities" if apart else "") + ".")
        first, last = (pd.Timestamp(int(hour) * 3600, unit="s", tz="UTC")
                       for hour in (inside["first"].min(), inside["last"].max()))
        return [self.finding(d, score, summary, evidence, first, last) for d in members]

    def _apart(self, members: list[str], context: Context) -> bool:
        places = [(e.latitude, e.longitude) for d in members if (e := context.roster.get(d)) is not None
                  and e.latitude is not None and e.longitude is not None]
        return any(great_circle_km(a[0], a[1], b[0], b[1]) > self.apart_km
                   for i, a in enumerate(places) for b in places[i + 1:])
