"""Many employees' laptops on one network at the same time: the decisive fleet signal.

Devices of *different* employees that report from the same egress IP, gateway MAC hash or Wi-Fi
BSSID hash in the same hour are linked; linked devices form clusters (connected components).
A cluster is weighed by its size (a couple is two people; a farm is more, design README), by the
kind of network (a LAN identity beats a shared egress IP), by persistence (farm laptops never
leave; coworking visitors and office neighbours are there part of the time) and by whether the
roster places its members in different cities. Company egress (office, corporate VPN) is skipped.
Every member gets the finding.

A shared public address is not a shared room (issue 16): carrier-grade NAT (5G/mobile home
internet, satellite; RFC 6598 space as the gateway or source), consumer VPN exits and hosting NAT
put strangers behind one address, hours at a time, with different partners each time. So an egress
address links two devices only when (1) it is not such a network (``network_kind`` mobile, cgnat,
vpn or hosting, or 100.64.0.0/10 on the path), (2) their LAN identities do not disagree in that hour
(both report a gateway MAC, or else a BSSID, and they differ: two routers, two rooms), and (3) when
the egress is all they share, it moves together: they share it in at least ``min_comovement`` of the
5-minute windows both report in (laptops behind one router change address together; CGNAT and VPN mappings churn
independently). LAN identities that agree link devices whatever the egress does.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, aggregated_columns, device_ids
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.distance import great_circle_km
from farmwatch.detectors.networks import corporate_mask

KIND_WEIGHT = {"gateway_mac": 1.0, "wifi_bssid": 1.0, "egress_ip": 0.8}
"""How much sharing one network identity means: a LAN identity is a room; a public address may be a house."""
LAN_KINDS = ("gateway_mac", "wifi_bssid")
KINDS = ("egress_ip", *LAN_KINDS)
REPORT_COLUMNS = ("device_id", "device_code", "hour", "window_end", "source_ip", "network_kind", "gateway_ip",
                  "gateway_mac_hash", "wifi_bssid_hash")
"""All the detector reads of the frames: these columns of ``Frames.reports`` (no other table), so a
neighbourhood's co-location can be judged from them alone (:mod:`farmwatch.collector.incremental`)."""
SHARED_BY_STRANGERS = frozenset({"mobile", "cgnat", "vpn", "hosting"})
"""``geo.network_kind`` values whose public addresses carry many unrelated customers at once."""
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
"""RFC 6598 shared address space: only carrier-grade NAT hands it out, so it on the path means CGNAT."""


def _in_shared_space(codes: np.ndarray, uniques: np.ndarray) -> np.ndarray:
    """Per value of a factorized column (``pd.factorize``: ``codes``, -1 for missing, and its
    ``uniques``): True for an IPv4 address inside 100.64.0.0/10 (missing and malformed: False).
    Each distinct address is parsed once, and spread to the rows by its code."""
    inside = np.zeros(len(uniques) + 1, dtype=bool)  # the extra last entry: code -1 (missing)
    for code, text in enumerate(uniques):
        try:
            inside[code] = isinstance(text, str) and ipaddress.ip_address(text) in SHARED_ADDRESS_SPACE
        except ValueError:
            pass
    return inside[codes]


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
                 max_score: float = 0.95, min_comovement: float = 0.75) -> None:
        self.min_overlap_hours = min_overlap_hours
        self.size_scores = size_scores
        self.full_persistence = full_persistence
        self.apart_km = apart_km
        self.apart_bonus = apart_bonus
        self.max_score = max_score
        self.min_comovement = min_comovement

    def _sightings(self, reports: pd.DataFrame) -> pd.DataFrame:
        """(kind, key code, device code, hour, gateway code, BSSID code) for every network identity
        seen, kind as its position in KINDS; the last two (-1: not reported) let an egress link be
        checked against the LAN identities. Egress of networks strangers share (module docstring) is
        left out."""
        # Integer codes instead of 64-character hashes: the joins below then run on numbers.
        egress, addresses = pd.factorize(reports["source_ip"].to_numpy(), use_na_sentinel=True)
        shared_egress = (reports["network_kind"].isin(SHARED_BY_STRANGERS).to_numpy()
                         | _in_shared_space(egress, addresses)
                         | _in_shared_space(*pd.factorize(reports["gateway_ip"].to_numpy(), use_na_sentinel=True)))
        devices, hours = reports["device_code"].to_numpy(), reports["hour"].to_numpy()
        gateway = pd.factorize(reports["gateway_mac_hash"].to_numpy(), use_na_sentinel=True)[0]
        bssid = pd.factorize(reports["wifi_bssid_hash"].to_numpy(), use_na_sentinel=True)[0]
        keyed = (np.where(shared_egress, -1, egress), gateway, bssid)  # in KINDS order
        # The rows are sorted by device and time, so one device's hour is one run of rows: a key's
        # first sighting per device-hour is its first row with that (run, key), found by hashing
        # one integer per row instead of four columns (DataFrame.drop_duplicates).
        run = np.cumsum((np.diff(devices, prepend=-1) != 0) | (np.diff(hours, prepend=hours[:1] - 1) != 0))
        rows = []
        for kind, codes in enumerate(keyed):
            kept = np.flatnonzero(codes >= 0)
            key = run[kept] * (int(codes.max(initial=-1)) + 1) + codes[kept]
            first = kept[~pd.Series(key).duplicated().to_numpy()]
            rows.append({"kind": np.full(len(first), kind, dtype=np.int8), "key": codes[first],
                         "device_id": devices[first], "hour": hours[first],
                         "gateway": gateway[first], "bssid": bssid[first]})
        return pd.DataFrame({name: np.concatenate([part[name] for part in rows]) for name in rows[0]})

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        # Only the columns read here and in _moving_together: a filtered copy of every column cost more
        # than the rest of the detector.
        reports = frames.reports.loc[~corporate_mask(frames, context.config.corporate_networks), list(REPORT_COLUMNS)]
        # Devices as their codes (in device id order) until the pairs are known: the grouping and
        # joins below then hash numbers, not id strings of every window.
        seen = self._sightings(reports)
        ids = device_ids(frames.reports)
        seen = seen[seen.groupby(["kind", "key", "hour"])["device_id"].transform("nunique") >= 2]
        if seen.empty:
            return []
        # The employee of each device code (the device itself when not in the roster), as a number.
        employees = [e.employee_id if (e := context.roster.get(d)) is not None else d for d in ids]
        employee = pd.factorize(np.array(employees, dtype=object))[0]
        pairs = seen.merge(seen, on=["kind", "key", "hour"])
        x, y = pairs["device_id_x"].to_numpy(), pairs["device_id_y"].to_numpy()
        pairs = pairs[(x < y) & (employee[x] != employee[y])]
        pairs = pairs[~self._rooms_disagree(pairs)]
        together = aggregated_columns(pairs.groupby(["device_id_x", "device_id_y"]),
                                      hours=("hour", "nunique"), first=("hour", "min"), last=("hour", "max"))
        together = together[together["hours"] >= self.min_overlap_hours].reset_index()
        pairs = pairs.assign(kind=np.asarray(KINDS, dtype=object)[pairs["kind"].to_numpy()],
                             device_id_x=ids[pairs["device_id_x"].to_numpy()],
                             device_id_y=ids[pairs["device_id_y"].to_numpy()])
        together = together.assign(device_id_x=ids[together["device_id_x"].to_numpy()],
                                   device_id_y=ids[together["device_id_y"].to_numpy()])
        together = self._moving_together(together, pairs, reports)
        if together.empty:
            return []
        pairs = pairs.merge(together[["device_id_x", "device_id_y"]], on=["device_id_x", "device_id_y"])
        components = _Components()
        for a, b in zip(together["device_id_x"], together["device_id_y"]):
            components.union(a, b)
        columns = ["device_id", "kind", "key", "hour"]
        shared = pd.concat([pairs[[side, "kind", "key", "hour"]].set_axis(columns, axis=1)
                            for side in ("device_id_x", "device_id_y")])
        # Hours with a report per device: hours never go back within a device's time-sorted run, so
        # each row where the device or the hour changes starts a new one.
        codes, hours = frames.reports["device_code"].to_numpy(), frames.reports["hour"].to_numpy()
        new_hour = np.diff(codes, prepend=-1) != 0
        new_hour[1:] |= np.diff(hours) != 0
        hours_total = dict(zip(ids, np.bincount(codes[new_hour], minlength=len(ids)).tolist()))
        shared_per_device = shared.groupby("device_id")["hour"].nunique()
        hours_shared = dict(zip(shared_per_device.index, shared_per_device.tolist()))  # looked up per member
        kinds: dict[str, set[str]] = {}
        for device, kind in zip(shared["device_id"].to_numpy(), shared["kind"].to_numpy()):  # no frame per device
            kinds.setdefault(device, set()).add(kind)
        best_kind = {device: max(KIND_WEIGHT[k] for k in found) for device, found in kinds.items()}
        clusters: dict[str, list[str]] = {}
        for device in sorted(set(together["device_id_x"]) | set(together["device_id_y"])):
            clusters.setdefault(components.find(device), []).append(device)
        found = []
        for members in clusters.values():
            found.extend(self._cluster(members, together, hours_total, hours_shared, best_kind, kinds, context))
        return found

    @staticmethod
    def _rooms_disagree(pairs: pd.DataFrame) -> np.ndarray:
        """Per egress pair-hour: True when the two devices' LAN identities say two different rooms
        (gateway MACs both reported and different; failing that, BSSIDs both reported and different)."""
        egress = (pairs["kind"] == KINDS.index("egress_ip")).to_numpy()
        gx, gy = pairs["gateway_x"].to_numpy(), pairs["gateway_y"].to_numpy()
        bx, by = pairs["bssid_x"].to_numpy(), pairs["bssid_y"].to_numpy()
        gateways_known = (gx >= 0) & (gy >= 0)
        apart = np.where(gateways_known, gx != gy, (bx >= 0) & (by >= 0) & (bx != by))
        return egress & apart

    def _moving_together(self, together: pd.DataFrame, pairs: pd.DataFrame, reports: pd.DataFrame) -> pd.DataFrame:
        """``together`` without the pairs linked only by an egress address that they share in fewer
        than ``min_comovement`` of the 5-minute windows both reported in (strangers whose NAT
        mappings met by chance; an hour is too coarse, as a churning mapping meets most others in it)."""
        if together.empty:
            return together
        lan_pairs = pairs.loc[pairs["kind"].isin(LAN_KINDS), ["device_id_x", "device_id_y"]].drop_duplicates()
        keyed = together.merge(lan_pairs.assign(lan=True), on=["device_id_x", "device_id_y"], how="left")
        egress_only = np.flatnonzero(keyed["lan"].isna().to_numpy())
        if not len(egress_only):
            return together
        involved = set(together.loc[egress_only, "device_id_x"]) | set(together.loc[egress_only, "device_id_y"])
        mine = reports[reports["device_id"].isin(involved)]
        windows = mine[["device_id", "source_ip"]].assign(window=mine["window_end"].dt.floor("5min"))
        # One address per device and window, indexed by window: each pair is then one aligned comparison.
        by_device = {device: rows.drop_duplicates("window").set_index("window")["source_ip"]
                     for device, rows in windows.groupby("device_id", sort=False)}
        keep = np.ones(len(together), dtype=bool)
        for row in egress_only:
            a, b = by_device[together.at[row, "device_id_x"]], by_device[together.at[row, "device_id_y"]]
            common = a.index.intersection(b.index)
            if not len(common) or (a[common] == b[common]).mean() < self.min_comovement:
                keep[row] = False
        return together[keep].reset_index(drop=True)

    def _cluster(self, members: list[str], together: pd.DataFrame, hours_total: dict[str, int],
                 hours_shared: dict[str, int], best_kind: dict[str, float], kinds_seen: dict[str, set[str]],
                 context: Context) -> list[DeviceFinding]:
        employees = sorted({context.roster[d].employee_id if d in context.roster else d for d in members})
        size = len(employees)
        base = self.size_scores[min(size, len(self.size_scores) - 1)]
        persistence = float(np.median([hours_shared.get(d, 0) / max(hours_total.get(d, 1), 1) for d in members]))
        kind_weight = float(max(best_kind.get(d, 0.0) for d in members))
        apart = self._apart(members, context)
        score = base * kind_weight * min(max(persistence / self.full_persistence, 0.3), 1.0)
        score = min(score + (self.apart_bonus if apart and score > 0 else 0.0), self.max_score)
        inside = together[together["device_id_x"].isin(members)]
        kinds = sorted(set().union(*(kinds_seen.get(d, set()) for d in members)))
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
