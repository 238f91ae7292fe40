"""The laptop's own settings vs the roster: its time zone, and input languages of operator countries.

Weak by design (bilingual employees type Korean too): this detector only adds to other evidence.
Operator languages follow the public cases: DPRK IT workers (FBI/IC3 PSA 2024, Microsoft Jasper
Sleet 2025) type Korean and often work through Chinese and Russian infrastructure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_runs
from farmwatch.detectors.frame import Frames

# Substrings of keyboard layouts / IMEs / locales, lower-cased. Windows layouts are KLIDs
# (Microsoft "Keyboard identifiers for Windows": 00000412 Korean, 00000804 Chinese (PRC),
# 00000419 Russian); macOS and X11 name the language.
OPERATOR_LANGUAGES = {
    "korean": ("korean", "00000412", "ko_kr", "ko-kr", "keylayout.2-set", "hangul", "kr"),
    "chinese": ("chinese", "00000804", "zh_cn", "zh-cn", "pinyin", "cn"),
    "russian": ("russian", "00000419", "ru_ru", "ru-ru", "ru"),
}


def _languages(values: str) -> set[str]:
    found = set()
    for item in values.lower().replace(";", " ").replace(",", " ").split():
        for language, marks in OPERATOR_LANGUAGES.items():
            if any(item == mark or (len(mark) > 2 and mark in item) for mark in marks):
                found.add(language)
    return found


def utc_offset_minutes(tz: str | None, at: datetime) -> int | None:
    """The UTC offset of IANA zone ``tz`` at ``at``; None when the zone is unknown."""
    try:
        offset = at.astimezone(ZoneInfo(tz)).utcoffset() if tz else None
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return None if offset is None else int(offset.total_seconds() // 60)


_READ = ("window_end", "country", "utc_offset_minutes", "keyboard_layouts", "input_methods", "locale")


class HostMismatchDetector(Detector):
    """A clock set to another zone than the roster's, and operator-country input languages."""

    name = "host_mismatch"
    group = "host"
    weak = True

    def __init__(self, timezone_score: float = 0.3, near_timezone_score: float = 0.1, far_hours: float = 4.0,
                 language_score: float = 0.2, min_share: float = 0.5) -> None:
        self.timezone_score = timezone_score
        self.near_timezone_score = near_timezone_score
        self.far_hours = far_hours
        self.language_score = language_score
        self.min_share = min_share

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        found = []
        # Each device's rows are one run (in device id order): its positions without a groupby.
        first, count = device_runs(reports["device_code"].to_numpy())
        ids = reports["device_id"].to_numpy()
        positions = {ids[at]: np.arange(at, at + n) for at, n in zip(first, count)}
        columns = {name: reports[name].array for name in _READ}  # a device's rows: one slice of each
        for device in self._candidates(reports, positions, context):
            at = positions[device]
            rows = {name: column[at[0]:at[-1] + 1] for name, column in columns.items()}
            entry = context.roster.get(str(device))
            # A clock following the laptop abroad (egress from another country) is travel, not a
            # mismatch; an operator's zone on a laptop that egresses at home is.
            offsets = np.asarray(rows["utc_offset_minutes"], dtype=float)
            if entry is not None and entry.country:
                country = np.asarray(rows["country"], dtype=object)
                offsets = offsets[pd.isna(country) | (country == entry.country)]
            offsets = offsets[~np.isnan(offsets)]
            evidence: dict[str, object] = {}
            score = 0.0
            sentences = []
            if entry is not None and len(offsets):
                expected = utc_offset_minutes(entry.timezone, rows["window_end"][len(at) // 2].to_pydatetime())
                share = float((offsets != expected).mean()) if expected is not None else 0.0
                if expected is not None and share >= self.min_share:
                    values, times = np.unique(offsets, return_counts=True)
                    seen = int(values[times == times.max()][0])  # the mode (the smallest of several, as Series.mode)
                    # Travellers inside a continent shift a few hours; a clock set to an operator's
                    # zone (Asia from the US) is half a day away.
                    far = abs(seen - expected) >= self.far_hours * 60
                    score = self.timezone_score if far else self.near_timezone_score
                    evidence.update(utc_offset_minutes=seen, roster_offset_minutes=expected, mismatch_share=share)
                    sentences.append(f"its clock runs at UTC{seen / 60:+g} while the roster's "
                                     f"{entry.timezone} is UTC{expected / 60:+g}")
            layouts, methods, locales = (np.asarray(rows[name], dtype=object)
                                         for name in ("keyboard_layouts", "input_methods", "locale"))
            typed = ";".join(list(pd.unique(layouts)) + list(pd.unique(methods))
                             + list(pd.unique(locales[~pd.isna(locales)])))
            languages = _languages(typed)
            if languages:
                score = 1.0 - (1.0 - score) * (1.0 - self.language_score)
                evidence["languages"] = sorted(languages)
                sentences.append(f"it has {', '.join(sorted(languages))} input configured")
            if not sentences:
                continue
            summary = "On this laptop " + " and ".join(sentences) + "."
            found.append(self.finding(str(device), score, summary, evidence,
                                      rows["window_end"].min(), rows["window_end"].max()))
        return found

    def _candidates(self, reports: pd.DataFrame, positions: dict[Any, np.ndarray], context: Context) -> list[Any]:
        """The devices (sorted) that can have a finding: a home-egress clock offset other than the
        roster zone's (or any at all when ``min_share`` is 0), or an operator language. Decided over
        whole columns with one zone lookup per device, so the per-device work in :meth:`detect`
        (which decides again, the same way) is left for the few that can."""
        # Anything but text (but a missing locale, which is skipped) goes to the per-device path,
        # which says what it is.
        odd = np.zeros(len(reports), dtype=bool)
        for column in ("keyboard_layouts", "input_methods", "locale"):
            values = reports[column].to_numpy(dtype=object)
            codes, uniques = pd.factorize(values)  # missing (None, NaN): -1, the last flag
            odd |= np.array([not isinstance(value, str) or bool(_languages(value)) for value in uniques]
                            + [True])[codes]
            if column == "locale":  # a missing locale is skipped (NaN, not text, is not)
                missing = np.flatnonzero(codes == -1)
                odd[missing] = [value is not None for value in values[missing]]
        offsets = reports["utc_offset_minutes"].to_numpy(dtype=float)
        window_ends = reports["window_end"].array
        # Per row: the roster country of its device, then whether the row egressed at home (missing
        # country, None or NaN, counts as home; so does every row of a device without one).
        roster_country = {device: entry.country or None for device, entry in context.roster.items()}
        device_country = np.array([roster_country.get(device) for device in positions], dtype=object)
        codes = reports["device_code"].to_numpy()
        countries = reports["country"].to_numpy(dtype=object)
        expected_country = device_country[codes]
        at_home = (pd.isna(countries) | pd.isna(expected_country)
                   | (countries == expected_country))
        candidates = []
        for device, at in positions.items():
            if odd[at].any():
                candidates.append(device)
                continue
            entry = context.roster.get(str(device))
            if entry is None:
                continue
            home = at[at_home[at]]
            seen = offsets[home]
            seen = seen[~np.isnan(seen)]
            if not len(seen):
                continue
            expected = utc_offset_minutes(entry.timezone, window_ends[at[len(at) // 2]].to_pydatetime())
            if expected is not None and (self.min_share <= 0 or (seen != expected).any()):
                candidates.append(device)
        return sorted(candidates)
