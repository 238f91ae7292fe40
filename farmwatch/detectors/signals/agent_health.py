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

And three for an agent that is stopped, reinstalled or reset while the laptop runs:

- *stopped while the system stayed up*: a running agent's windows tile (each starts where the last
  ended, across a suspend too: the window just grows), so a hole between one window's end and the
  next one's start means no agent ran; when ``host.boot_time`` is the same on both sides, the
  operating system did not restart meanwhile, so the agent was stopped, not the laptop switched off.
  A hole of that kind overlapping the roster's working hours (09-18 on a weekday, in its zone: the
  hours the laptop is meant to be used) weighs more. Agent upgrades restart it in seconds and
  ``stopped_minutes`` is far above that.
- *re-enrolled*: the collector's ``enrolments`` count rose between two reports, so the agent lost
  its state and enrolled again as the same machine; IT reimaging does that too (then the boot time
  changes), so that weighs next to nothing (it is in the evidence for the analyst), while a reinstall
  on the running system (same boot time) weighs more.
- *sequence restarted*: the collector's ``seq_conflicts`` count rose: reports came with seqs already
  stored with other content (a state dir restored from a backup or copied back). The agent renumbers
  and re-sends them, so nothing is lost, but the restart stays evidence. An agent whose disk was too
  full to save its counter does that too, for a report or two, so the score grows with the count
  and reaches ``seq_conflict_score`` at ``full_conflicts``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_runs
from farmwatch.detectors.clock import local_times
from farmwatch.detectors.frame import Frames

_READ_PER_DEVICE = ("seq", "hardware_id", "os", "hostname", "clock_skew_seconds", "window_start", "window_end",
                    "boot_time", "enrolments", "seq_conflicts")
"""The report columns :meth:`AgentHealthDetector.detect` reads of each candidate device's rows."""

WORKDAY_HOURS = (9, 18)
"""The roster's working hours for a stopped agent: 09:00-18:00 local on Monday to Friday."""


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
                 skew_score: float = 0.15, stopped_minutes: float = 30.0, stopped_score: float = 0.3,
                 stopped_working_score: float = 0.45, min_working_hours: float = 1.0,
                 boot_tolerance_seconds: float = 120.0, reenrolled_score: float = 0.05,
                 reinstalled_running_score: float = 0.35, seq_conflict_score: float = 0.3,
                 full_conflicts: int = 5) -> None:
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
        self.stopped_minutes = stopped_minutes
        self.stopped_score = stopped_score
        self.stopped_working_score = stopped_working_score
        self.min_working_hours = min_working_hours
        self.boot_tolerance_seconds = boot_tolerance_seconds
        self.reenrolled_score = reenrolled_score
        self.reinstalled_running_score = reinstalled_running_score
        self.seq_conflict_score = seq_conflict_score
        self.full_conflicts = full_conflicts

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        fleet_last = pd.Timestamp(context.fleet_last_report or reports["window_end"].max())
        found = []
        # Window times as plain datetime64 (NaT kept) for the per-device hole and gap arithmetic:
        # tz-aware columns turn into arrays of Timestamp objects, far slower at fleet scale.
        starts = reports["window_start"].dt.tz_localize(None).to_numpy()
        ends = reports["window_end"].dt.tz_localize(None).to_numpy()
        # Each device's rows are one run (in device id order): its positions without a groupby.
        first, count = device_runs(reports["device_code"].to_numpy())
        positions = {device: np.arange(at, at + n)
                     for device, at, n in zip(reports["device_id"].to_numpy()[first], first, count)}
        # Only the columns read per device: taking a device's rows copies each column of the frame.
        read = reports[list(_READ_PER_DEVICE)]
        for device in self._candidates(reports, context, fleet_last):  # sorted
            mine = positions[device]
            rows = read.iloc[mine]
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
            gaps = self._gaps_in_always_on(ends[mine])
            if gaps:
                parts["silent_gaps"] = self.gap_score
                sentences.append(f"a laptop that otherwise never sleeps went silent {gaps} time(s) for "
                                 f"{self.gap_hours:g} h or more")
            entry = context.roster.get(str(device))
            stopped = self._stopped(rows, starts[mine], ends[mine], entry.timezone if entry else None)
            if stopped:
                working = [hole for hole in stopped if hole["working_hours"] >= self.min_working_hours]
                parts["agent_stopped"] = self.stopped_working_score if working else self.stopped_score
                hours = sum(hole["hours"] for hole in stopped)
                sentences.append(f"its agent was not running {len(stopped)} time(s) ({hours:.1f} h) while the "
                                 "system stayed up (same boot time)"
                                 + (f", {sum(h['working_hours'] for h in working):.1f} h of it in working hours"
                                    if working else ""))
            enrolled = self._rises(rows, "enrolments")
            running = [bool(self._same_boot(rows, at)) for at in enrolled]  # reinstalled on the running system
            if len(enrolled):
                parts["reenrolled"] = self.reinstalled_running_score if any(running) else self.reenrolled_score
                sentences.append(f"it enrolled again as the same machine {len(enrolled)} time(s) (its agent's state "
                                 "was wiped or reinstalled" + (", without a restart of the system)" if any(running)
                                                               else ")"))
            refused = rows["seq_conflicts"].dropna()
            conflicts = int(refused.max() - refused.min()) if len(refused) else 0
            if conflicts:
                parts["seq_conflicts"] = self.seq_conflict_score * min(conflicts / self.full_conflicts, 1.0)
                sentences.append(f"{conflicts} of its reports came under seqs already stored with other content "
                                 "(its sequence restarted; they were renumbered and kept)")
            evidence = {"agent_stopped": stopped[:5], "reenrolments": len(enrolled),
                        "reinstalled_without_restart": sum(running), "seq_conflicts": conflicts,
                        "seq_resets": resets, "missing_reports": missing, "hardware_ids": len(hardware),
                        "silent_hours": silent, "silent_gaps": gaps, "operating_systems": systems[:5],
                        "hostnames": hostnames[:5], "clock_skew_seconds_median": skew}
            finding = self.combined(str(device), parts, sentences, "Agent health: ", evidence,
                                    rows["window_end"].min(), rows["window_end"].max())
            if finding is not None:
                found.append(finding)
        return found

    def _candidates(self, reports: pd.DataFrame, context: Context, fleet_last: pd.Timestamp) -> list[Any]:
        """The devices (sorted) that can have a part, decided over whole columns (each test is the
        per-device one or looser, and :meth:`detect` decides again the same way): most devices have
        none, and the per-device pandas work was about 1 ms per device whatever it found."""
        # Per device over its run of rows (device codes, in id order; rows time-sorted within a run).
        if reports.empty:
            return []
        devices = reports["device_code"].to_numpy()
        first, count = device_runs(devices)
        odd = np.zeros(len(first), dtype=bool)
        for column in ("hardware_id", "os", "hostname"):  # more than one distinct value (missing aside)
            values = pd.factorize(reports[column].to_numpy(dtype=object))[0]  # missing: -1
            odd |= np.minimum.reduceat(np.where(values < 0, len(values), values), first) < np.maximum.reduceat(
                values, first)
        refused = reports["seq_conflicts"].to_numpy(dtype=float)  # a rise of the refused-seq count (all missing: none)
        odd |= np.nan_to_num(np.fmax.reduceat(refused, first) - np.fmin.reduceat(refused, first)) > 0
        # A steady skew needs enough reports and a median at least skew_seconds off: the median lies
        # between the two middle values (each device's known skews sorted, missing last), so the
        # larger of their sizes bounds it (numbers sorted per run, not an object-column groupby).
        skews = reports["clock_skew_seconds"].to_numpy(dtype=float)  # missing: NaN
        known = np.add.reduceat((~np.isnan(skews)).astype(np.int64), first)
        ranked = np.abs(skews[np.lexsort((skews, devices))])
        lower, upper = ranked[first + np.maximum(known - 1, 0) // 2], ranked[first + np.maximum(known, 1) // 2]
        odd |= (known >= self.min_skew_reports) & (np.maximum(lower, upper) >= self.skew_seconds - 1e-9)
        window_ends = reports["window_end"].array
        newest = pd.Series(window_ends[first + count - 1])
        silent = (min(context.now, fleet_last.to_pydatetime()) - newest).dt.total_seconds() / 3600
        odd |= (silent >= self.silent_hours).to_numpy()
        flagged: set[int] = set(np.flatnonzero(odd).tolist())  # device codes
        # Per row against the device's row before: enrolment rises, long silences, holes between windows.
        same = np.zeros(len(reports), dtype=bool)
        same[1:] = devices[1:] == devices[:-1]
        enrolments = reports["enrolments"].to_numpy(dtype=float)
        rose = np.zeros(len(reports), dtype=bool)
        rose[1:] = enrolments[1:] > enrolments[:-1]  # NaN compares False, as in _rises
        ends = reports["window_end"].dt.tz_localize(None).to_numpy()
        starts = reports["window_start"].dt.tz_localize(None).to_numpy()
        # Long silences count only on a device reporting most of its span (_gaps_in_always_on).
        span = (newest - pd.Series(window_ends[first])).dt.total_seconds() + self.interval_seconds
        always_on = (count * self.interval_seconds / span >= self.always_on_coverage).to_numpy()[devices]
        gap = np.zeros(len(reports), dtype=bool)
        gap[1:] = (ends[1:] - ends[:-1]) / np.timedelta64(1, "s") >= self.gap_hours * 3600
        gap &= always_on
        # A hole counts only with the same boot time on both sides (_same_boot); a boot time this
        # parse cannot read is left to _same_boot's own parse.
        # A laptop keeps one boot time for days: each distinct text is parsed once.
        boot_codes, boot_texts = pd.factorize(reports["boot_time"].to_numpy(dtype=object))  # missing: -1
        boots = pd.to_datetime(pd.Series(boot_texts, dtype=object), utc=True, format="ISO8601", errors="coerce")
        boot = np.append(boots.dt.tz_localize(None).to_numpy(), np.datetime64("NaT"))[boot_codes]
        unread = np.append(boots.isna().to_numpy() & np.array([isinstance(v, str) for v in boot_texts], dtype=bool),
                           False)[boot_codes]
        hole = np.zeros(len(reports), dtype=bool)
        hole[1:] = ((starts[1:] - ends[:-1]) / np.timedelta64(1, "m") >= self.stopped_minutes) & (
            (np.abs((boot[1:] - boot[:-1]) / np.timedelta64(1, "s")) <= self.boot_tolerance_seconds)
            | unread[1:] | unread[:-1])
        flagged.update(devices[same & (rose | gap | hole)].tolist())
        # Sequence resets and holes, over the rows that carry a seq.
        seqs = reports["seq"].to_numpy(dtype=float)
        known = ~np.isnan(seqs)
        seq_devices, seqs = devices[known], seqs[known]
        step = np.diff(seqs)
        after = seq_devices[1:]
        within = after == seq_devices[:-1]
        flagged.update(after[within & (step < 0)].tolist())
        skipped = np.bincount(after, weights=np.where(within & (step > 1), step - 1, 0.0), minlength=len(first))
        flagged.update(np.flatnonzero(skipped >= self.min_missing).tolist())
        ids = reports["device_id"].to_numpy()[first]
        return [ids[code] for code in sorted(flagged)]  # code order is id order

    def _same_boot(self, rows: pd.DataFrame, at: int) -> bool | None:
        """Whether rows ``at - 1`` and ``at`` name the same boot time (None when either is unknown)."""
        before, after = rows["boot_time"].iloc[at - 1], rows["boot_time"].iloc[at]
        if not isinstance(before, str) or not isinstance(after, str):
            return None
        try:
            apart = abs((pd.Timestamp(after) - pd.Timestamp(before)).total_seconds())
        except ValueError:  # an unparseable boot time proves nothing
            return None
        return apart <= self.boot_tolerance_seconds

    @staticmethod
    def _rises(rows: pd.DataFrame, column: str) -> np.ndarray:
        """Row positions where ``column`` (a collector count) went up since the row before."""
        values = rows[column].to_numpy(dtype=float)
        rose = np.diff(values) > 0  # NaN (older records) compares False
        return np.flatnonzero(rose) + 1

    def _stopped(self, rows: pd.DataFrame, window_starts: np.ndarray, window_ends: np.ndarray,
                 timezone: str | None) -> list[dict[str, Any]]:
        """Holes between tiled windows with the same boot time on both sides (module docstring);
        ``window_starts``/``window_ends``: the rows' window times as datetime64."""
        holes = (window_starts[1:] - window_ends[:-1]) / np.timedelta64(1, "m")  # NaT: NaN, never a hole
        found: list[dict[str, Any]] = []
        candidates = np.flatnonzero(holes >= self.stopped_minutes) + 1
        if not len(candidates):
            return found
        starts = rows["window_start"].reset_index(drop=True)
        ends = rows["window_end"].reset_index(drop=True)
        for at in candidates:
            if not self._same_boot(rows, int(at)):
                continue
            began, resumed = ends.iloc[at - 1], starts.iloc[at]
            found.append({"from": began, "to": resumed, "hours": (resumed - began).total_seconds() / 3600,
                          "working_hours": _working_hours(began, resumed, timezone)})
        return found

    def _steady_skew(self, skews: np.ndarray) -> float | None:
        """The median skew when the clock is steadily off (module docstring), else None."""
        if len(skews) < self.min_skew_reports:
            return None
        low, median, high = np.percentile(skews, [25, 50, 75])
        if abs(median) >= self.skew_seconds and high - low <= self.skew_spread_seconds:
            return float(median)
        return None

    def _gaps_in_always_on(self, ends: np.ndarray) -> int:
        """Long silences of a device that reports most of the time (``always_on_coverage`` of its span,
        gaps included): a person's laptop sleeps every night, so gaps mean nothing there; on an
        always-on laptop they suggest a stopped agent. ``ends``: its window ends (datetime64, in order)."""
        if len(ends) < 2:
            return 0
        second = np.timedelta64(1, "s")
        long = np.diff(ends) / second >= self.gap_hours * 3600
        span = (ends[-1] - ends[0]) / second + self.interval_seconds
        coverage = len(ends) * self.interval_seconds / span
        return int(long.sum()) if coverage >= self.always_on_coverage else 0


def _working_hours(began: pd.Timestamp, resumed: pd.Timestamp, timezone: str | None) -> float:
    """Hours between two instants that fall in the roster zone's working hours (:data:`WORKDAY_HOURS`);
    0 without a roster zone (unknown is not evidence)."""
    if timezone is None:
        return 0.0
    steps = pd.Series(pd.date_range(began, resumed, freq="5min", inclusive="left"))  # 5-minute resolution
    local = local_times(steps, timezone)
    inside = (local.dt.day_of_week < 5) & (local.dt.hour >= WORKDAY_HOURS[0]) & (local.dt.hour < WORKDAY_HOURS[1])
    return float(inside.sum()) / 12
