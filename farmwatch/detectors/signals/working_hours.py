"""Whose working day is this? Fit a 09-18 workday to the device's activity by hour.

Pyongyang office hours are the US night (design README). For every whole-hour UTC offset the
share of active reports falling in that zone's 09:00-18:00 is computed; the best offset is the
zone the activity "lives" in. A best zone far from the roster's, explaining far more activity than
the roster's own workday does, is the finding ("active like someone working 09-18 in UTC+9").
Weak: night owls and on-call staff exist, so it only adds to other evidence.
"""

from __future__ import annotations

import numpy as np

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_runs
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.signals.host_mismatch import utc_offset_minutes

OFFSETS = np.arange(-12, 15)
WORKDAY = np.arange(9, 18)


def workday_fit(hist_utc: np.ndarray) -> np.ndarray:
    """For each offset in OFFSETS, the share of a 24-bin UTC activity histogram inside 09-18 local."""
    total = hist_utc.sum()
    if total == 0:
        return np.zeros(len(OFFSETS))
    return np.array([hist_utc[(WORKDAY - offset) % 24].sum() / total for offset in OFFSETS])


class WorkingHoursDetector(Detector):
    """Activity that fits another time zone's workday better than the roster's."""

    name = "working_hours"
    group = "hours"
    weak = True

    def __init__(self, min_active_reports: int = 24, min_shift_hours: int = 4, min_gain: float = 0.35,
                 top_score: float = 0.4, active_seconds: float = 30.0) -> None:
        self.min_active_reports = min_active_reports
        self.min_shift_hours = min_shift_hours
        self.min_gain = min_gain
        self.top_score = top_score
        self.active_seconds = active_seconds

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        # Whole columns of the active rows only (a filtered copy of the frame would copy every column).
        mask = reports["active_seconds"].fillna(0).to_numpy() >= self.active_seconds
        if not mask.any():
            return []
        hours = reports["hour"].to_numpy()[mask] % 24  # whole hours since the epoch: the UTC hour of day
        ends = reports["window_end"].array[mask]
        ids = reports["device_id"].to_numpy()[mask]
        first, counts = device_runs(reports["device_code"].to_numpy()[mask])  # devices with active rows, in order
        codes = np.repeat(np.arange(len(first)), counts)
        # Every device's 24-bin UTC histogram and its fit to each offset's workday, as two matrices
        # (whole columns, not device by device): fit = hist @ inside / total.
        hists = np.bincount(codes * 24 + hours, minlength=len(first) * 24).reshape(len(first), 24).astype(float)
        inside = np.zeros((24, len(OFFSETS)))
        for column, offset in enumerate(OFFSETS):
            inside[(WORKDAY - offset) % 24, column] = 1.0
        fits = hists @ inside / np.maximum(counts, 1)[:, None]
        found = []
        for at, device in enumerate(ids[first]):
            entry = context.roster.get(str(device))
            if entry is None or counts[at] < self.min_active_reports:
                continue
            middle = ends[first[at] + counts[at] // 2].to_pydatetime()
            roster_minutes = utc_offset_minutes(entry.timezone, middle)
            if roster_minutes is None:
                continue
            fit = fits[at]
            best = int(np.argmax(fit))
            best_offset = int(OFFSETS[best])
            roster_offset = roster_minutes / 60
            roster_fit = float(fit[np.argmin(np.abs(OFFSETS - roster_offset))])
            shift = abs((best_offset - roster_offset + 12) % 24 - 12)
            gain = float(fit[best]) - roster_fit
            if shift < self.min_shift_hours or gain < self.min_gain:
                continue
            hist = hists[at]
            score = self.top_score * min(gain / 0.7, 1.0)
            summary = (f"Active like someone working 09-18 in UTC{best_offset:+d} ({fit[best]:.0%} of "
                       f"{counts[at]} active reports), not in the roster's {entry.timezone} "
                       f"({roster_fit:.0%} inside its workday).")
            evidence = {"best_utc_offset": best_offset, "best_fit": float(fit[best]),
                        "roster_utc_offset": roster_offset, "roster_fit": roster_fit,
                        "active_reports": int(counts[at]), "hours_utc": hist.astype(int).tolist()}
            found.append(self.finding(str(device), score, summary, evidence,
                                      ends[first[at]], ends[first[at] + counts[at] - 1]))  # time-sorted
        return found
