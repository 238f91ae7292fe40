"""The agent itself as evidence: sequence resets, lost reports, silence, one identity on two machines.

Every report carries ``seq`` (+1 per report) and the agent spools until the collector accepts, so a
healthy device's sequence has no holes and never goes back (design README, security model). A
reset means the agent's state was wiped or copied; holes mean reports were removed from the spool;
a device that stops reporting while the fleet reports, or an always-on laptop that goes quiet for
hours, may have had its agent stopped (agents get stopped on farms). One device id seen from two
hardware ids (when the record carries ``hardware_id``; unknown counts as absent) means a token was
copied to another machine.

Issue 16 adds two: reports of one device naming two operating systems (a reinstall enrols afresh,
so one device id on two OSes is its token on a second machine) or two hostnames (renames happen,
so that weighs little); and a clock that is steadily off: ``clock_skew_seconds`` (the collector's
window end minus receipt) far from zero in most reports with little spread. Spooled reports arrive
late by varying amounts, so a wide spread is delivery, not a clock; a steady offset is a clock
someone set by hand (NTP keeps honest laptops within a second).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector
from farmwatch.detectors.frame import Frames


class AgentHealthDetector(Detector):
    """Sequence resets and holes, copied identities, and devices gone silent."""

    name = "agent_health"
    group = "agent"
    attack = "T1562.001"  # Impair Defenses: Disable or Modify Tools

    def __init__(self, reset_score: float = 0.35, hole_score: float = 0.15, min_missing: int = 3,
                 copied_score: float = 0.7, silent_hours: float = 24.0, silent_score: float = 0.15,
                 gap_hours: float = 3.0, always_on_coverage: float = 0.8, gap_score: float = 0.15,
                 interval_seconds: float = 300.0, os_change_score: float = 0.5, hostname_change_score: float = 0.1,
                 skew_seconds: float = 120.0, skew_spread_seconds: float = 30.0, min_skew_reports: int = 6,
                 skew_score: float = 0.15) -> None:
        self.reset_score = reset_score
        self.hole_score = hole_score
        self.min_missing = min_missing
        self.copied_score = copied_score
        self.silent_hours = silent_hours
        self.silent_score = silent_score
        self.gap_hours = gap_hours
        self.always_on_coverage = always_on_coverage
        self.gap_score = gap_score
        self.interval_seconds = interval_seconds
        self.os_change_score = os_change_score
        self.hostname_change_score = hostname_change_score
        self.skew_seconds = skew_seconds
        self.skew_spread_seconds = skew_spread_seconds
        self.min_skew_reports = min_skew_reports
        self.skew_score = skew_score

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        fleet_last = reports["window_end"].max()
        found = []
        for device, rows in reports.groupby("device_id", sort=True):
            parts: dict[str, float] = {}
            sentences = []
            step = np.diff(rows["seq"].dropna().to_numpy())
            resets = int((step < 0).sum())
            missing = int(step[step > 1].sum() - (step > 1).sum())
            if resets:
                parts["seq_reset"] = self.reset_score
                sentences.append(f"its report sequence went back {resets} time(s)")
            if missing >= self.min_missing:
                parts["seq_holes"] = self.hole_score
                sentences.append(f"{missing} report(s) never arrived although the agent spools them")
            hardware = sorted(rows["hardware_id"].dropna().unique())
            if len(hardware) > 1:
                parts["copied_identity"] = self.copied_score
                sentences.append(f"its identity was used from {len(hardware)} machines")
            systems = list(dict.fromkeys(rows["os"].dropna()))
            if len(systems) > 1:
                parts["os_changed"] = self.os_change_score
                sentences.append(f"its reports name {len(systems)} operating systems ({', '.join(systems)}) "
                                 "under one enrolment")
            hostnames = list(dict.fromkeys(rows["hostname"].dropna()))
            if len(hostnames) > 1:
                parts["hostname_changed"] = self.hostname_change_score
                sentences.append(f"its reports name {len(hostnames)} hostnames under one enrolment")
            skew = self._steady_skew(rows["clock_skew_seconds"].dropna().to_numpy(dtype=float))
            if skew is not None:
                parts["clock_skew"] = self.skew_score
                sentences.append(f"its clock runs a steady {abs(skew):.0f} s {'ahead' if skew > 0 else 'behind'}")
            silent = (min(context.now, fleet_last.to_pydatetime()) - rows["window_end"].max()).total_seconds() / 3600
            if silent >= self.silent_hours:
                parts["silent"] = self.silent_score
                sentences.append(f"it has been silent for {silent:.0f} h while the fleet reports")
            gaps = self._gaps_in_always_on(rows)
            if gaps:
                parts["silent_gaps"] = self.gap_score
                sentences.append(f"a laptop that otherwise never sleeps went silent {gaps} time(s) for "
                                 f"{self.gap_hours:g} h or more")
            evidence = {"seq_resets": resets, "missing_reports": missing, "hardware_ids": len(hardware),
                        "silent_hours": silent, "silent_gaps": gaps, "operating_systems": systems[:5],
                        "hostnames": hostnames[:5], "clock_skew_seconds_median": skew}
            finding = self.combined(str(device), parts, sentences, "Agent health: ", evidence,
                                    rows["window_end"].min(), rows["window_end"].max())
            if finding is not None:
                found.append(finding)
        return found

    def _steady_skew(self, skews: np.ndarray) -> float | None:
        """The median skew when the clock is steadily off (module docstring), else None."""
        if len(skews) < self.min_skew_reports:
            return None
        low, median, high = np.percentile(skews, [25, 50, 75])
        if abs(median) >= self.skew_seconds and high - low <= self.skew_spread_seconds:
            return float(median)
        return None

    def _gaps_in_always_on(self, rows: pd.DataFrame) -> int:
        """Long silences of a device that reports most of the time (``always_on_coverage`` of its span,
        gaps included): a person's laptop sleeps every night, so gaps mean nothing there; on an
        always-on laptop they suggest a stopped agent."""
        ends = rows["window_end"]
        if len(ends) < 2:
            return 0
        gap = ends.diff().dt.total_seconds().fillna(0.0)
        long = gap >= self.gap_hours * 3600
        span = (ends.iloc[-1] - ends.iloc[0]).total_seconds() + self.interval_seconds
        coverage = len(ends) * self.interval_seconds / span
        return int(long.sum()) if coverage >= self.always_on_coverage else 0
