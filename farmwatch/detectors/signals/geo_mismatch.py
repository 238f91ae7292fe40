"""Where the laptop's traffic leaves: egress country vs the roster, impossible travel, VPN/hosting exits.

Reads the collector's geo lookup of each report's source address. Company egress (an office, the
corporate VPN; ``corporate_networks`` in config or ``network_kind == corporate``) says nothing about
where the person is and is skipped. Consumer VPN products on the laptop itself are named evidence:
DOJ laptop-farm cases and Microsoft's Jasper Sleet write-up name Astrill VPN as the operators' choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_runs
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.networks import corporate_mask

OPERATOR_VPNS = frozenset({"astrill"})
"""VPN products named in public laptop-farm cases (DOJ 2024-2025 indictments; Microsoft, Jasper Sleet 2025)."""


_READ = ("device_id", "device_code", "window_end", "country", "asn", "asn_org", "network_kind", "vpn_product")


class GeoMismatchDetector(Detector):
    """Egress from the wrong country, country hops faster than travel, anonymising or unclassified exits.

    A week abroad fills a 72-hour lookback with foreign egress, so the country alone stays below
    the review threshold; it needs another signal to matter."""

    name = "geo_mismatch"
    group = "egress"
    attack = "T1133"

    def __init__(self, country_score: float = 0.45, anonymiser_score: float = 0.45,
                 operator_vpn_score: float = 0.5, hop_score: float = 0.25, hop_hours: float = 1.0,
                 unknown_score: float = 0.1) -> None:
        self.country_score = country_score
        self.anonymiser_score = anonymiser_score
        self.operator_vpn_score = operator_vpn_score
        self.hop_score = hop_score
        self.hop_hours = hop_hours
        self.unknown_score = unknown_score

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        # Only the columns read here (a filtered copy of every column cost a third of the detector).
        outside = reports.loc[~corporate_mask(frames, context.config.corporate_networks), list(_READ)]
        found = []
        candidates = self._candidates(outside, context)
        # Each candidate device's rows are one run (sorted by device and time): slices of these
        # arrays, not a frame per device.
        first, count = device_runs(candidates["device_code"].to_numpy())
        ids, window_ends = candidates["device_id"].to_numpy(), candidates["window_end"].array
        columns = {name: candidates[name].to_numpy(dtype=object) for name in ("country", "asn_org", "vpn_product")}
        kinds, asns = candidates["network_kind"].to_numpy(dtype=object), candidates["asn"].to_numpy(dtype=float)
        for at, length in zip(first.tolist(), count.tolist()):
            rows = slice(at, at + length)
            device = ids[at]
            country, kind = columns["country"][rows], kinds[rows]
            entry = context.roster.get(str(device))
            parts: dict[str, float] = {}
            evidence: dict[str, object] = {"reports": length}
            sentences = []
            anonymised = (kind == "vpn") | (kind == "hosting")
            known = ~pd.isna(country) & ~anonymised
            known_countries, known_ends = country[known], window_ends[rows][known]
            if entry is not None and entry.country and len(known_countries):
                foreign = known_countries != entry.country
                share = float(foreign.mean())
                if share > 0:
                    # Sustained foreign egress weighs fully; a trip abroad (a minority of reports) less.
                    parts["country"] = self.country_score * share * (1.0 if share >= 0.5 else 0.5)
                    countries = sorted(set(known_countries[foreign]))
                    evidence.update(foreign_countries=countries, foreign_share=share)
                    sentences.append(f"left from {', '.join(countries)} in {share:.0%} of reports "
                                     f"(roster: {entry.country})")
            if anonymised.any():
                share = float(anonymised.mean())
                parts["anonymiser"] = self.anonymiser_score * share
                evidence.update(anonymiser_share=share,
                                anonymiser_networks=_named(columns["asn_org"][rows][anonymised])[:5])
                sentences.append(f"exited through a VPN or hosting network in {share:.0%} of reports")
            # A network the geo database knows (an ASN) but cannot classify: weak, and only when it
            # is where the laptop usually is.
            unclassified = (kind == "unknown") & ~np.isnan(asns[rows])
            if unclassified.mean() >= 0.5:
                share = float(unclassified.mean())
                parts["unknown_network"] = self.unknown_score * share
                evidence.update(unknown_share=share,
                                unknown_networks=_named(columns["asn_org"][rows][unclassified])[:5])
                sentences.append(f"left through a network of unknown kind in {share:.0%} of reports")
            products = sorted({str(p).lower() for p in columns["vpn_product"][rows] if not pd.isna(p)} & OPERATOR_VPNS)
            if products:
                parts["operator_vpn"] = self.operator_vpn_score
                evidence["operator_vpn"] = products
                sentences.append(f"runs {', '.join(products)} VPN, named in public laptop-farm cases")
            hops = self._hops(known_countries, known_ends)
            if hops:
                parts["impossible_travel"] = self.hop_score
                evidence["country_hops"] = hops
                sentences.append(f"changed country {hops} time(s) within {self.hop_hours:g} h")
            finding = self.combined(str(device), parts, sentences, "Egress ", evidence,
                                    window_ends[rows].min(), window_ends[rows].max())
            if finding is not None:
                found.append(finding)
        return found

    @staticmethod
    def _candidates(outside: pd.DataFrame, context: Context) -> pd.DataFrame:
        """Only the devices with something to say: a foreign, anonymised or changing egress, or an
        operator VPN (a cheap vectorised pass, so the per-device work stays small)."""
        # Per device code (in device id order) rather than per row: the roster country, then the
        # devices with an odd row.
        codes = outside["device_code"].to_numpy()
        by_code = np.full(int(codes.max()) + 1 if len(codes) else 0, None, dtype=object)
        first, _ = device_runs(codes)
        for code, device in zip(codes[first], outside["device_id"].to_numpy()[first]):
            entry = context.roster.get(device)
            by_code[code] = entry.country if entry is not None and entry.country else None
        home = pd.Series(by_code[codes], index=outside.index)
        country = outside["country"]
        products, names = pd.factorize(outside["vpn_product"].to_numpy())  # -1: none (last entry below)
        operator_vpn = np.array([isinstance(name, str) and name.lower() in OPERATOR_VPNS for name in names] + [False])
        same_device = np.zeros(len(codes), dtype=bool)
        same_device[1:] = codes[1:] == codes[:-1]
        odd = (
            (country.notna() & home.notna() & (country != home))
            | outside["network_kind"].isin(["vpn", "hosting"])
            | (outside["network_kind"].eq("unknown") & outside["asn"].notna())
            | operator_vpn[products]
            | (country.notna() & (country != country.shift()) & same_device)
        )
        flagged = np.zeros(len(by_code), dtype=bool)
        flagged[codes[odd.to_numpy()]] = True
        return outside[flagged[codes]]

    def _hops(self, countries: np.ndarray, window_ends: Any) -> int:
        """Consecutive reports from different countries (none missing) closer in time than any
        flight allows."""
        if len(countries) < 2:
            return 0
        changed = countries[1:] != countries[:-1]
        quick = np.asarray((window_ends[1:] - window_ends[:-1]) < pd.Timedelta(hours=self.hop_hours))
        return int((changed & quick).sum())


def _named(organisations: np.ndarray) -> list[str]:
    """The distinct names among ``organisations`` (missing left out), sorted."""
    return sorted({name for name in organisations if not pd.isna(name)})
