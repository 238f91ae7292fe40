"""Local time of day in the roster's time zone, and what counts as ordinary working time."""

from __future__ import annotations

import pandas as pd

WORK_START_HOUR = 7
"""Earliest ordinary start: flexible office hours in the US run roughly 07:00-19:00."""
WORK_END_HOUR = 20


def local_times(times: pd.Series, tz: str | None) -> pd.Series:
    """UTC timestamps read on the wall clock of ``tz`` (UTC when the zone is unknown or invalid)."""
    try:
        return times.dt.tz_convert(tz or "UTC")
    except Exception:  # an unknown IANA name in a roster must not stop scoring
        return times.dt.tz_convert("UTC")


def outside_working_time(local: pd.Series) -> pd.Series:
    """True where a local timestamp falls on a weekend or outside 07:00-20:00."""
    hour = local.dt.hour
    return (local.dt.day_of_week >= 5) | (hour < WORK_START_HOUR) | (hour >= WORK_END_HOUR)
