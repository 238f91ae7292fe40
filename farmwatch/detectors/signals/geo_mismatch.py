"""Where the laptop's traffic leaves: egress country vs the roster, impossible travel, VPN/hosting exits.

Reads the collector's geo lookup of each report's source address. Company egress (an office, the
corporate VPN; ``corporate_networks`` in config or ``network_kind == corporate``) says nothing about
where the person is and is skipped. Consumer VPN products on the laptop itself are named evidence:
DOJ laptop-farm cases and Microsoft's Jasper Sleet write-up name Astrill VPN as the operators' choice.
"""

from __future__ import annotations

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
        for device, rows in self._candidates(outside, context).groupby("device_id", sort=True):
            entry = context.roster.get(str(device))
            parts: dict[str, float] = {}
            evidence: dict[str, object] = {"reports": len(rows)}
            sentences = []
            known = rows[rows["country"].notna() & ~rows["network_kind"].isin(["vpn", "hosting"])]
            if entry is not None and entry.country and len(known):
                foreign = known["country"] != entry.country
                share = float(foreign.mean())
                if share > 0:
                    # Sustained foreign egress weighs fully; a trip abroad (a minority of reports) less.
                    parts["country"] = self.country_score * share * (1.0 if share >= 0.5 else 0.5)
                    countries = sorted(known.loc[foreign, "country"].unique())
                    evidence.update(foreign_countries=countries, foreign_share=share)
                    sentences.append(f"left from {', '.join(countries)} in {share:.0%} of reports "
                                     f"(roster: {entry.country})")
            anonymised = rows["network_kind"].isin(["vpn", "hosting"])
            if anonymised.any():
                share = float(anonymised.mean())
                parts["anonymiser"] = self.anonymiser_score * share
                evidence.update(anonymiser_share=share,
                                anonymiser_networks=sorted(rows.loc[anonymised, "asn_org"].dropna().unique())[:5])
                sentences.append(f"exited through a VPN or hosting network in {share:.0%} of reports")
            # A network the geo database knows (an ASN) but cannot classify: weak, and only when it
            # is where the laptop usually is.
            unclassified = rows["network_kind"].eq("unknown") & rows["asn"].notna()
            if unclassified.mean() >= 0.5:
                share = float(unclassified.mean())
                parts["unknown_network"] = self.unknown_score * share
                evidence.update(unknown_share=share,
                                unknown_networks=sorted(rows.loc[unclassified, "asn_org"].dropna().unique())[:5])
                sentences.append(f"left through a network of unknown kind in {share:.0%} of reports")
            products = sorted({str(p).lower() for p in rows["vpn_product"].dropna()} & OPERATOR_VPNS)
            if products:
                parts["operator_vpn"] = self.operator_vpn_score
                evidence["operator_vpn"] = products
                sentences.append(f"runs {', '.join(products)} VPN, named in public laptop-farm cases")
            hops = self._hops(known)
            if hops:
                parts["impossible_travel"] = self.hop_score
                evidence["country_hops"] = hops
                sentences.append(f"changed country {hops} time(s) within {self.hop_hours:g} h")
            finding = self.combined(str(device), parts, sentences, "Egress ", evidence,
                                    rows["window_end"].min(), rows["window_end"].max())
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

    def _hops(self, rows: pd.DataFrame) -> int:
        """Consecutive reports from different countries closer in time than any flight allows."""
        if len(rows) < 2:
            return 0
        changed = rows["country"].ne(rows["country"].shift()) & rows["country"].shift().notna()
        quick = rows["window_end"].diff() < pd.Timedelta(hours=self.hop_hours)
        return int((changed & quick).sum())
