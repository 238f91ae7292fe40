"""A laptop that never sleeps and is driven at night, local time.

A person's laptop sleeps: lid closed, battery saving, nights off. A farm laptop stays open on a
shelf, reporting every interval around the clock, and its operator's day is the employee's night.
Weak: some people leave laptops docked and awake, so this only adds to other evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_runs
from farmwatch.detectors.clock import local_times
from farmwatch.detectors.frame import Frames

NIGHT_HOURS = (0, 6)
"""Local 00:00-06:00: when a person in the roster's zone is asleep."""


class AlwaysOnDetector(Detector):
    """Reports around the clock for days, with input in the local night."""

    name = "always_on"
    group = "uptime"
    weak = True

    def __init__(self, interval_seconds: float = 300.0, min_days: float = 2.0, coverage: float = 0.9,
                 night_active_share: float = 0.1, top_score: float = 0.35, active_seconds: float = 30.0) -> None:
        self.interval_seconds = interval_seconds
        self.min_days = min_days
        self.coverage = coverage
        self.night_active_share = night_active_share
        self.top_score = top_score
        self.active_seconds = active_seconds

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        found: list[DeviceFinding] = []
        if reports.empty:
            return found
        first, count = device_runs(reports["device_code"].to_numpy())
        ids = reports["device_id"].to_numpy()
        narrow = reports[["window_start", "window_end", "active_seconds"]]
        for at in self._candidates(reports, first, count):  # in device order
            device = ids[first[at]]
            rows = narrow.iloc[first[at]:first[at] + count[at]]
            span = (rows["window_end"].max() - rows["window_start"].min()).total_seconds()
            if span < self.min_days * 86400:
                continue
            coverage = len(rows) * self.interval_seconds / span
            entry = context.roster.get(str(device))
            local = local_times(rows["window_end"], entry.timezone if entry else None)
            active = rows["active_seconds"].fillna(0).to_numpy() >= self.active_seconds
            hour = local.dt.hour.to_numpy()  # once: each .dt.hour converts every time again
            night = (hour >= NIGHT_HOURS[0]) & (hour < NIGHT_HOURS[1])
            night_share = float((active & night).sum() / max(active.sum(), 1))
            if coverage < self.coverage or night_share < self.night_active_share:
                continue
            score = self.top_score * min(night_share / 0.3, 1.0)
            summary = (f"The laptop reported {min(coverage, 1.0):.0%} of the time over {span / 86400:.1f} days without "
                       f"sleeping, and {night_share:.0%} of its active windows fell at 00-06 local time.")
            found.append(self.finding(str(device), score, summary,
                                      {"coverage": min(coverage, 1.0), "night_active_share": night_share,
                                       "days": span / 86400},
                                      rows["window_end"].min(), rows["window_end"].max()))
        return found

    def _candidates(self, reports: pd.DataFrame, first: np.ndarray, count: np.ndarray) -> np.ndarray:
        """The devices (positions in ``first``/``count``: each device's run of rows) that can be
        always on. Most laptops sleep: the span and coverage tests, over whole columns, leave only
        the few always-on devices for the per-device local-time work in :meth:`detect` (which
        repeats both tests); a device without any window start stays, as :meth:`detect` judges it."""
        ends = reports["window_end"].array  # time-sorted within a device: its last row is its latest
        starts = reports["window_start"].array.as_unit(ends.unit)
        earliest = np.minimum.reduceat(np.where(starts.isna(), np.iinfo(np.int64).max, starts.asi8), first)
        # Seconds as Timedelta.total_seconds gives them: ticks over ticks per second.
        spans = (ends.asi8[first + count - 1] - earliest) / (np.timedelta64(1, "s") // np.timedelta64(1, ends.unit))
        spans[earliest == np.iinfo(np.int64).max] = np.nan  # no window start at all: as pandas' NaT span
        short = spans < self.min_days * 86400
        sleeps = count * self.interval_seconds / spans < self.coverage
        return np.flatnonzero(~(short | sleeps))
