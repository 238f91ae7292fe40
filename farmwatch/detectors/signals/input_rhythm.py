"""Does the input come from hands on this keyboard, or through a remote-control pipe?

Remote-desktop clients batch input per packet (Red Hat, US8972563), so keys arrive in bursts with
tiny intervals, and mouse moves arrive at network rate rather than device rate (US9319422B2), in
jumpier paths (BioCatch); Amazon (2025) caught a remotely driven laptop by its >110 ms keystroke
latency. One odd window proves nothing, so the detector judges the *share* of odd
windows over the device's history (and over its recent half, so a laptop that turns remote after
weeks of local typing shows), each window judged against fixed physical thresholds and the
fleet's own spread (median +- 3 MADs, learned in :meth:`fit`, so a fleet of slow trackpads is not
all odd). Injected input while no approved tool holds a session,
and virtual input devices of remote-desktop servers (xrdp's ``xrdpMouse``/``xrdpKeyboard``) add.
Macro tools inject too, which is why injection alone stays moderate.

Keys typed at a machine's fixed pace (issue 16): hands spread their key intervals widely (the 90th
percentile several times the 10th), an IP-KVM typing text pasted into its web page sends every key
at the gadget's own pace (PiKVM and TinyPilot "paste as keys"), and as hardware nothing marks it
injected. Windows whose ``key_interval_ms_p90`` is within ``regular_spread`` of their p10, with keys
neither bunched (p10 at least ``regular_min_ms``) nor injected, are "too regular"; a programmable
keyboard's macro does the same now and then, so only a share of such windows counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_ids, device_runs
from farmwatch.detectors.frame import Frames

REMOTE_VIRTUAL_DEVICES = ("xrdp", "vnc", "rustdesk", "anydesk", "teamviewer", "spice")
"""Virtual input device names created by remote-desktop servers (xrdp source: xrdpMouse/xrdpKeyboard)."""


class InputRhythmDetector(Detector):
    """Remote-like input timing over many windows, injected input, remote virtual devices."""

    name = "input_rhythm"
    group = "input"
    attack = "T1219"

    def __init__(self, burst_fraction: float = 0.06, key_p10_ms: float = 15.0, mouse_rate_hz: float = 45.0,
                 jump_fraction: float = 0.015, min_key_events: int = 40, min_windows: int = 12,
                 odd_features: int = 2, top_score: float = 0.85, injected_score: float = 0.35,
                 virtual_score: float = 0.4, fleet_mads: float = 3.0, min_fleet: int = 20,
                 injected_window_share: float = 0.05, recent_rise: float = 0.2, regular_spread: float = 1.5,
                 regular_min_ms: float = 8.0, regular_share: float = 0.1, min_regular_windows: int = 3,
                 regular_score: float = 0.6) -> None:
        self.burst_fraction = burst_fraction
        self.key_p10_ms = key_p10_ms
        self.mouse_rate_hz = mouse_rate_hz
        self.jump_fraction = jump_fraction
        self.min_key_events = min_key_events
        self.min_windows = min_windows
        self.odd_features = odd_features
        self.top_score = top_score
        self.injected_score = injected_score
        self.virtual_score = virtual_score
        self.fleet_mads = fleet_mads
        self.min_fleet = min_fleet
        self.injected_window_share = injected_window_share  # a window's injected events above this share mark it
        self.recent_rise = recent_rise  # the summary says "rising" when the recent half's share is this much higher
        self.regular_spread = regular_spread
        self.regular_min_ms = regular_min_ms
        self.regular_share = regular_share
        self.min_regular_windows = min_regular_windows
        self.regular_score = regular_score

    def typed_windows(self, reports: pd.DataFrame) -> pd.DataFrame:
        """The windows :meth:`fit` learns from (enough keystrokes), only the columns it reads: a fleet
        baseline gathered device batch by device batch keeps no more than this."""
        return reports.loc[reports["key_events"].fillna(0).to_numpy() >= self.min_key_events,
                           ["device_id", "key_events", "key_burst_fraction", "key_interval_ms_p10",
                            "mouse_rate_hz_median", "mouse_jump_fraction"]]

    def fit(self, frames: Frames, context: Context) -> InputRhythmDetector:
        """Learn the fleet's spread; a window is odd only beyond both the physical and fleet limits."""
        typed = self.typed_windows(frames.reports)
        if typed["device_id"].nunique() < self.min_fleet:
            typed = typed.iloc[0:0]  # too few devices to call anything "the fleet": physics only
        k = self.fleet_mads
        self.thresholds_ = {
            "burst": max(self.burst_fraction, _robust_bound(typed["key_burst_fraction"], k)),
            "key_p10": min(self.key_p10_ms, _robust_bound(typed["key_interval_ms_p10"], -k)),
            "mouse_rate": min(self.mouse_rate_hz, _robust_bound(typed["mouse_rate_hz_median"], -k)),
            "jump": max(self.jump_fraction, _robust_bound(typed["mouse_jump_fraction"], k)),
        }
        return self

    def odd_windows(self, reports: pd.DataFrame) -> pd.DataFrame:
        """Per typed window: which features look remote, and whether enough of them do."""
        t = self.thresholds_
        odd = pd.DataFrame({
            "burst": reports["key_burst_fraction"] > t["burst"],
            "key_p10": reports["key_interval_ms_p10"] < t["key_p10"],
            "mouse_rate": reports["mouse_rate_hz_median"] < t["mouse_rate"],
            "jump": reports["mouse_jump_fraction"] > t["jump"],
        })
        odd["odd"] = odd.sum(axis=1) >= self.odd_features
        return odd

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        reports = frames.reports
        approved_live = self._approved_sessions(frames, context)
        # Windows an approved tool (the helpdesk) was driving are expected to look remote.
        # Only the columns read below: a filtered copy of every column cost a sixth of the detector.
        typed = reports.loc[(reports["key_events"].fillna(0).to_numpy() >= self.min_key_events) & ~approved_live,
                            list(_TYPED)]
        odd = self.odd_windows(typed)
        odd["device_id"] = typed["device_id"]
        odd["device_code"] = typed["device_code"]
        odd["regular"] = self.regular_windows(typed)
        events = (reports["key_events"].fillna(0) + reports["mouse_events"].fillna(0)).to_numpy()
        injected = reports["injected_events"].fillna(0).to_numpy()
        # Per device code (in device id order): the share of counted windows with injected input.
        codes = reports["device_code"].to_numpy()
        ids = device_ids(reports)
        injected_window = (injected > self.injected_window_share * np.maximum(events + injected, 1)) & ~approved_live
        counted = reports["has_input"].to_numpy() & ((events + injected) > 0)
        windows = np.bincount(codes[counted], minlength=len(ids))
        with_injected = np.bincount(codes[counted], weights=injected_window[counted], minlength=len(ids))
        with_input = np.flatnonzero(windows)
        inj_share = pd.Series(with_injected[with_input] / windows[with_input], index=ids[with_input])
        virtual = reports.loc[reports["virtual_devices"] != "", ["device_id", "virtual_devices"]]
        virtual_by_device = virtual.groupby("device_id")["virtual_devices"].agg(set).to_dict()
        found = []
        if self.min_regular_windows > 0:  # only the devices that can have a part get the per-device work
            devices = sorted(self._rhythm_candidates(odd) | set(inj_share.index[inj_share > 0])
                             | set(virtual["device_id"]))
        else:  # then even a device without typed windows is judged on its regular keys
            devices = sorted(set(odd["device_id"]) | set(inj_share.index) | set(virtual["device_id"]))
        # Each device's typed windows and reports are one run (rows sorted by device and time).
        typed_first, typed_count = device_runs(typed["device_code"].to_numpy())
        typed_runs = dict(zip(typed["device_id"].to_numpy()[typed_first], zip(typed_first, typed_count)))
        first, count = device_runs(codes)
        runs = dict(zip(ids, zip(first, count)))
        ends = reports["window_end"].array
        # A device's typed windows are slices of these arrays (no frame per device).
        typed_ends, odd_flags = typed["window_end"].array, odd["odd"].to_numpy()
        odd_features, regular_flags = odd[list(_FEATURES)].to_numpy(), odd["regular"].to_numpy()
        for device in devices:
            start, length = typed_runs.get(device, (0, 0))
            rows = slice(start, start + length)
            parts: dict[str, float] = {}
            evidence: dict[str, object] = {"typed_windows": length}
            sentences = []
            if length >= self.min_windows:
                share = float(odd_flags[rows].mean())
                # Against its own history: a laptop typed on locally for weeks that turns remote
                # (handed to a facilitator after onboarding) shows it in its recent windows.
                recent = slice(start + length // 2, start + length)
                recent_share = float(odd_flags[recent].mean()) if length - length // 2 >= self.min_windows else share
                judged = max(share, recent_share)
                evidence.update(remote_like_share=share, recent_remote_like_share=recent_share,
                                thresholds=self.thresholds_)
                if judged > 0.1:
                    parts["rhythm"] = self.top_score * min((judged - 0.1) / 0.4, 1.0)
                    # Share of the odd windows showing each feature (numpy: pandas' per-call cost
                    # was over a quarter of the detector; both divide the count by the windows).
                    shown = odd_features[rows][odd_flags[rows]]
                    features = pd.Series(shown.mean(axis=0), index=list(_FEATURES))
                    evidence["odd_feature_share"] = features.round(3).to_dict()
                    since = (f", {recent_share:.0%} since {typed_ends[recent.start]:%Y-%m-%d %H:%M} UTC"
                             if recent_share > share + self.recent_rise else "")
                    sentences.append(f"{share:.0%} of {length} typed windows had remote-control rhythm "
                                     f"(bunched keys, network-rate mouse, jumps){since}")
            regular = int(regular_flags[rows].sum())
            if regular >= self.min_regular_windows and regular / length >= self.regular_share:
                parts["regular"] = self.regular_score * min(regular / length / 0.3, 1.0)
                evidence["too_regular_windows"] = regular
                sentences.append(f"{regular} of {length} typed windows had keys at a machine's fixed pace "
                                 f"(90th percentile interval within {self.regular_spread:g}x of the 10th, nothing "
                                 "injected): typed by a device such as an IP-KVM, not by hands")
            share_injected = float(inj_share.get(device, 0.0))
            if share_injected > 0:
                parts["injected"] = self.injected_score * min(share_injected / 0.5, 1.0)
                evidence["injected_share"] = share_injected
                sentences.append(f"{share_injected:.0%} of windows carried injected input with no approved "
                                 f"remote session")
            names = virtual_by_device.get(device, [])
            remote_devices = sorted({n for joined in names for n in joined.split(";")
                                     if any(mark in n.lower() for mark in REMOTE_VIRTUAL_DEVICES)})
            if remote_devices:
                parts["virtual_devices"] = self.virtual_score
                evidence["virtual_devices"] = remote_devices
                sentences.append(f"remote-desktop input devices {', '.join(remote_devices)} were present")
            start, length = runs[device]
            finding = self.combined(str(device), parts, sentences, "Input: ", evidence,
                                    ends[start], ends[start + length - 1])
            if finding is not None:
                found.append(finding)
        return found

    def _rhythm_candidates(self, odd: pd.DataFrame) -> set[str]:
        """Devices whose typed windows can give a rhythm or a regular-keys part, decided over whole
        columns (a small margin keeps every device :meth:`detect` would find): only those, and the
        devices with injected input or virtual devices, get the per-device work."""
        # Each device's typed windows are one run (rows sorted by device and time): sums per run.
        first, windows = device_runs(odd["device_code"].to_numpy())
        if not len(first):
            return set()
        later = np.arange(int(windows.sum())) - np.repeat(first, windows) >= np.repeat(windows // 2, windows)
        odd_flags = odd["odd"].to_numpy()
        odd_windows = np.add.reduceat(odd_flags.astype(np.int64), first)
        recent_odd = np.add.reduceat((odd_flags & later).astype(np.int64), first)  # in the recent half
        recent = windows - windows // 2
        share = odd_windows / windows
        recent_share = np.where(recent >= self.min_windows, recent_odd / recent, share)
        rhythm = (windows >= self.min_windows) & (np.maximum(share, recent_share) > 0.1 - 1e-9)
        regular = np.add.reduceat(odd["regular"].to_numpy().astype(np.int64), first)
        regular_keys = (regular >= self.min_regular_windows) & (regular / windows >= self.regular_share - 1e-9)
        return set(odd["device_id"].to_numpy()[first[rhythm | regular_keys]].tolist())

    def regular_windows(self, typed: pd.DataFrame) -> pd.Series:
        """Per typed window: keys at a fixed pace, neither bunched nor injected (module docstring)."""
        p10, p90 = typed["key_interval_ms_p10"], typed["key_interval_ms_p90"]
        return ((p10 >= self.regular_min_ms) & (p90 <= self.regular_spread * p10)
                & (typed["injected_events"].fillna(0) == 0))

    @staticmethod
    def _approved_sessions(frames: Frames, context: Context) -> np.ndarray:
        """Per record: an approved tool held a live session (its injected input is expected)."""
        mask = np.zeros(len(frames.reports), dtype=bool)
        tools = frames.tools
        pairs = [(device, tool) for device, entry in context.roster.items() for tool in entry.approved_tools]
        if tools.empty or not pairs:
            return mask
        live = tools[tools["live"]]
        approved = pd.MultiIndex.from_arrays([live["device_id"], live["tool"]]).isin(pd.MultiIndex.from_tuples(pairs))
        mask[live.loc[approved, "rec"].to_numpy()] = True
        return mask


_FEATURES = ("burst", "key_p10", "mouse_rate", "jump")
"""The odd-window features, as :meth:`InputRhythmDetector.odd_windows` names them."""
_TYPED = ("device_id", "device_code", "window_end", "key_burst_fraction", "key_interval_ms_p10",
          "key_interval_ms_p90", "mouse_rate_hz_median", "mouse_jump_fraction", "injected_events")
"""The columns :meth:`InputRhythmDetector.detect` reads of each typed window."""


def _robust_bound(values: pd.Series, mads: float) -> float:
    """Fleet median plus ``mads`` scaled MADs (farms are a minority, so they barely move it).

    With no data the bound is infinitely permissive, leaving the physical threshold alone."""
    values = values.dropna()
    if not len(values):
        return -np.inf if mads > 0 else np.inf
    median = float(values.median())
    return median + mads * 1.4826 * float((values - median).abs().median())
