"""Which devices look unlike the rest of the fleet? An IsolationForest over per-device features.

scikit-learn's IsolationForest (fixed ``random_state``, so runs repeat exactly) scores every device;
``decision_function`` below 0 marks an outlier. To say *why*, each outlying device names the features
furthest from the fleet median in robust z-scores (median/MAD). Weak: unusual is not malicious, so
the anomaly only adds to other evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from farmwatch.detectors.base import Context, DeviceFinding, Detector, device_ids
from farmwatch.detectors.clock import local_times
from farmwatch.detectors.frame import Frames

FEATURES = {
    "night_active_share": "share of active windows at 00-06 local time",
    "injected_share": "share of windows with injected input",
    "key_burst_median": "median share of bunched keystrokes",
    "key_p10_median": "median 10th-percentile key interval (ms)",
    "mouse_rate_median": "median mouse-move rate (Hz)",
    "mouse_jump_median": "median share of mouse jumps",
    "lan_neighbors_median": "median devices on the LAN",
    "rmm_tools": "distinct remote-access tools",
    "report_coverage": "share of the time the laptop reported",
}


def device_features(frames: Frames, context: Context, interval_seconds: float = 300.0,
                    active_seconds: float = 30.0, fill: pd.Series | None = None) -> pd.DataFrame:
    """One row per device, the FEATURES columns; a feature a device has no data for is filled with
    ``fill`` (default: the median of these devices), else 0."""
    return _filled(raw_device_features(frames, context, interval_seconds, active_seconds), fill)


def _filled(features: pd.DataFrame, fill: pd.Series | None = None) -> pd.DataFrame:
    return features.fillna(features.median() if fill is None else fill).fillna(0.0).astype(float)


def raw_device_features(frames: Frames, context: Context, interval_seconds: float = 300.0,
                        active_seconds: float = 30.0) -> pd.DataFrame:
    """:func:`device_features` before filling: NaN where a device has no data (each row depends on
    that device's records only, so rows computed device batch by device batch can be joined).

    A window counts as active with at least ``active_seconds`` of input; ``interval_seconds`` is
    the agents' reporting interval (for coverage)."""
    reports = frames.reports
    # Grouped on device codes (in device id order; numbers group faster than id strings), the
    # rows named by device id at the end.
    codes = reports["device_code"].to_numpy()
    ids = device_ids(reports)
    hours = pd.Series(np.nan, index=reports.index)
    # Each roster zone's rows read on its wall clock ("" for a device without one: UTC).
    zone_of = [(entry.timezone or "") if (entry := context.roster.get(device)) is not None else "" for device in ids]
    zones, zone_names = pd.factorize(np.array(zone_of, dtype=object))
    row_zones = zones[codes]
    for zone, tz in enumerate(zone_names):
        index = np.flatnonzero(row_zones == zone)
        hours.iloc[index] = local_times(reports["window_end"].iloc[index], tz or None).dt.hour.to_numpy()
    active = reports["active_seconds"].fillna(0) >= active_seconds
    per = pd.DataFrame({
        "device_id": codes,
        "night": (active & (hours < 6)).astype(float),
        "active": active.astype(float),
        "injected": (reports["injected_events"].fillna(0) > 0).astype(float),
        "burst": reports["key_burst_fraction"], "key_p10": reports["key_interval_ms_p10"],
        "mouse_rate": reports["mouse_rate_hz_median"], "jump": reports["mouse_jump_fraction"],
        "lan": reports["lan_neighbors"], "start": reports["window_start"], "end": reports["window_end"],
    }).groupby("device_id")  # device codes
    sums = per[["night", "active", "injected"]].sum()
    counts = per.size()
    span = (per["end"].max() - per["start"].min()).dt.total_seconds().clip(lower=interval_seconds)
    medians = per[["burst", "key_p10", "mouse_rate", "jump", "lan"]].median()
    tools = (frames.tools["tool"].groupby(codes[frames.tools["rec"].to_numpy()]).nunique() if len(frames.tools)
             else pd.Series(dtype=float))
    features = pd.DataFrame({
        "night_active_share": sums["night"] / sums["active"].clip(lower=1),
        "injected_share": sums["injected"] / counts,
        "key_burst_median": medians["burst"], "key_p10_median": medians["key_p10"],
        "mouse_rate_median": medians["mouse_rate"], "mouse_jump_median": medians["jump"],
        "lan_neighbors_median": medians["lan"],
        "rmm_tools": tools.reindex(counts.index).fillna(0),
        "report_coverage": (counts * interval_seconds / span).clip(upper=1.0),
    })
    features.index = pd.Index(ids[features.index.to_numpy()], name="device_id")
    return features


class FleetAnomalyDetector(Detector):
    """Devices the IsolationForest isolates quickly, with the features that make them stand out."""

    name = "fleet_anomaly"
    group = "anomaly"
    weak = True

    def __init__(self, n_estimators: int = 200, random_state: int = 0, min_devices: int = 20,
                 top_score: float = 0.3, explain: int = 3, full_margin: float = 0.15,
                 active_seconds: float = 30.0, interval_seconds: float = 300.0) -> None:
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.min_devices = min_devices
        self.top_score = top_score
        self.explain = explain
        self.full_margin = full_margin  # how far below 0 the forest's decision must be for top_score
        self.active_seconds = active_seconds
        self.interval_seconds = interval_seconds

    def fit(self, frames: Frames, context: Context) -> FleetAnomalyDetector:
        return self.fit_features(raw_device_features(frames, context, self.interval_seconds, self.active_seconds))

    def fit_features(self, raw: pd.DataFrame) -> FleetAnomalyDetector:
        """Fit on per-device features (:func:`raw_device_features` of the fleet, one row per device
        in device order), filled as :func:`device_features` fills them."""
        self.features_ = _filled(raw)
        self.model_ = None
        if len(self.features_) >= self.min_devices:
            self.model_ = IsolationForest(n_estimators=self.n_estimators, random_state=self.random_state)
            self.model_.fit(self.features_.to_numpy())
        self.median_ = self.features_.median()
        mad = (self.features_ - self.median_).abs().median() * 1.4826
        # A feature constant across most of the fleet has MAD 0: fall back to its spread, then to 1.
        self.scale_ = mad.where(mad > 0, self.features_.std().where(lambda s: s > 0, 1.0))
        return self

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        if self.model_ is None:
            return []
        # The frames given, not those fitted: a device is judged against the fleet the forest learned.
        features = device_features(frames, context, self.interval_seconds, self.active_seconds, fill=self.median_)
        if features.empty:
            return []
        values = features.to_numpy()
        decision = self.model_.decision_function(values)
        robust = (features - self.median_) / self.scale_
        names, z = list(robust.columns), robust.to_numpy()
        found = []
        for at in np.flatnonzero(decision < 0):  # only the outliers get the per-device work
            device, margin = features.index[at], decision[at]
            top = [names[column] for column in _largest_first(np.abs(z[at]))[:self.explain]]
            value = dict(zip(features.columns, values[at]))
            reasons = {name: {"value": float(value[name]),
                              "fleet_median": float(self.median_[name]),
                              "robust_z": float(z[at, names.index(name)])} for name in top}
            score = self.top_score * min(-margin / self.full_margin, 1.0)
            summary = ("Unlike the fleet in " + ", ".join(
                f"{FEATURES[name]} ({value[name]:.3g} vs {self.median_[name]:.3g})"
                for name in top) + ".")
            found.append(self.finding(str(device), score, summary,
                                      {"decision": float(margin), "features": reasons}))
        return found


def _largest_first(values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` from the largest (NaN last), as ``Series.sort_values(ascending=False)``
    orders them: pandas sorts the reversed values ascending with the same quicksort and reverses
    that order, which this repeats without a Series per device."""
    missing = np.isnan(values)
    backwards = np.flatnonzero(~missing)[::-1]
    return np.concatenate([backwards[values[~missing][::-1].argsort(kind="quicksort")][::-1], np.flatnonzero(missing)])
