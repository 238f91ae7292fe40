"""Scoring from rollups: the detectors' frames rebuilt from reduced windows, for the devices that changed.

:func:`score_devices` is what a scoring loop calls for a batch of devices: it reads only their rollups
(plus those of every device they may share a network with, found over ``sightings``) and scores them
with the same detectors as a full re-read; the two fleet baselines (input rhythm's thresholds and
the anomaly model's per-device features) come from :func:`refresh_baselines`, computed over the whole
fleet's rollups device batch by device batch and stored, on a slower cadence
(``BASELINE_MAX_AGE``). :func:`farmwatch.collector.rollups.changed_devices` says which devices a
run needs.

Against a full re-read of the same stored reports (``pipeline.score`` over ``Storage.records``) the
verdicts are the same (tests/collector/test_incremental_scoring.py compares them), except where a
baseline is older than the data: a device is then judged against the fleet as it was at the last
refresh, at most ``BASELINE_MAX_AGE`` ago.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.isolation import isolate, with_refusals
from farmwatch.collector.rollups import (
    FleetLastWindowEnd, catch_up, devices_since, neighbours, refusals, windows,
)
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import fleet_baselines
from farmwatch.contract import RosterEntry, Verdict
from farmwatch.detectors.base import Context, Detector, DeviceFinding, device_runs
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import Frames, frames_from_columns, paused_gc
from farmwatch.detectors.pipeline import detect, detection_context, verdicts_of
from farmwatch.detectors.registry import REGISTRY
from farmwatch.detectors.signals.colocation import REPORT_COLUMNS, ColocationDetector
from farmwatch.detectors.signals.fleet_anomaly import FEATURES, FleetAnomalyDetector, raw_device_features
from farmwatch.detectors.signals.input_rhythm import InputRhythmDetector

log = logging.getLogger("farmwatch.collector.incremental")

BASELINE_MAX_AGE = timedelta(hours=1)
"""How stale the stored fleet baselines may get before a scoring run refreshes them."""
BASELINE_BATCH = 500
"""Devices whose frames are held at once while the baselines are refreshed."""
BASELINE = "fleet"
_FITTED: dict[str, Any] = {}  # Baselines.fitted's last (Baselines, what they were fitted from, detectors)


@dataclass(frozen=True)
class Baselines:
    """What the fleet detectors learn from every device: input rhythm's per-feature thresholds and the
    anomaly model's per-device features (unfilled: NaN where a device has no data)."""

    computed_at: datetime
    params: str  # digest of the detection config they were learned under
    input_thresholds: dict[str, float]
    device_features: pd.DataFrame

    def fitted(self, config: DetectionConfig) -> dict[str, Detector]:
        """The two fleet detectors, fitted as a full re-read would fit them on the same records
        (the last ones fitted are kept: a scoring loop asks for them once per batch of devices)."""
        # The same Baselines as the last call's (every batch of a run passes the run's) are not
        # hashed again: hashing is a pass over the whole fleet's features, per batch. The last
        # answer is one tuple, replaced whole, so threads scoring at once never mix two answers.
        last = _FITTED.get("last")
        if last is not None and last[0] is self:
            known: dict[str, Detector] = last[2]
            return known
        learned = self.device_features
        key = (self.params, orjson.dumps(self.input_thresholds, option=orjson.OPT_SORT_KEYS),
               int(pd.util.hash_pandas_object(learned).sum()), tuple(learned.columns))
        detectors: dict[str, Detector] = last[2] if last is not None and last[1] == key else self._fit(config)
        _FITTED["last"] = (self, key, detectors)
        return detectors

    def _fit(self, config: DetectionConfig) -> dict[str, Detector]:
        rhythm = InputRhythmDetector(**config.params(InputRhythmDetector.name))
        rhythm.thresholds_ = dict(self.input_thresholds)
        anomaly = FleetAnomalyDetector(**_with_random_state(config, FleetAnomalyDetector.name))
        return {rhythm.name: rhythm, anomaly.name: anomaly.fit_features(self.device_features)}


class FleetReads:
    """What every batch of one scoring run needs to know about the whole fleet, read once for the
    run instead of once per batch: the roster (indexed by device, so a batch takes only its own
    devices' entries) and the fleet's newest window end (:class:`FleetLastWindowEnd`: after the
    first batch, only the rollups written since are read). Read per batch, both cost time in
    proportion to the fleet, so a run's cost grew with the square of the fleet (at 20,000 laptops
    a scan of every rollup of the lookback per batch). The roster is held as stored (each entry's
    JSON) and an entry parsed when a batch takes it: 20,000 parsed entries held 31 MB in every
    scoring process, their text a fifth of that. A roster imported during a run is used from the
    next run on; the import marks every device, so that run rescores them all."""

    def __init__(self, roster: Mapping[str, str], last_window_end: Callable[[], datetime | None]) -> None:
        """``roster``: each device's entry as stored (:meth:`Storage.roster_texts`), in the roster's order."""
        self._entries = list(roster.values())
        self._position = {device: index for index, device in enumerate(roster)}
        self.last_window_end = last_window_end

    @classmethod
    def read(cls, storage: Storage, since: datetime) -> FleetReads:
        """The roster as stored now, and the newest window end from the hour of ``since`` on."""
        return cls(storage.roster_texts(), FleetLastWindowEnd(storage, since))

    def roster_of(self, devices: Collection[str]) -> list[RosterEntry]:
        """The roster entries of ``devices``, in the roster's order. The detectors look a device up
        only for devices in their frames, so this is all a batch's scoring reads of the roster."""
        return [RosterEntry.model_validate_json(self._entries[i])
                for i in sorted(self._position[d] for d in devices if d in self._position)]


@dataclass(frozen=True)
class DeviceScores:
    """Verdicts of the devices asked for, each one's newest ``geo.network_kind`` (fleet index), and
    why the reducer refused a report of those that had one refused (each verdict carries it)."""

    verdicts: list[Verdict]
    network_kinds: dict[str, str]
    refused: dict[str, str] = dataclasses.field(default_factory=dict)


def score_devices(storage: Storage, devices: Collection[str], now: datetime, config: CollectorConfig,
                  baselines: Baselines | None = None, fleet_reads: FleetReads | None = None,
                  reduce_first: bool = True, neighbourhood: Collection[str] | None = None) -> DeviceScores:
    """Verdicts for ``devices`` (those with a report received in the lookback window), from rollups.

    Reduces whatever is still pending first (``reduce_first``), so the verdicts cover every report
    stored before the call; a scoring run reduces once, before its first batch, and passes False for
    its batches (each reduction call takes the write lock and looks over every report not yet
    settled, about two intervals of the whole fleet's reports, so per batch its cost grew with the
    fleet; a report stored during the run marks its device for the next run). Scores with
    ``baselines`` (default: the stored ones, refreshed when older than ``BASELINE_MAX_AGE`` or
    learned under another config) and ``fleet_reads`` (default: read now; a scoring run passes one
    for all its batches).

    Holds the frames of fewer than twice ``[detection] batch_devices`` devices at once: ``devices``
    are scored in parts of that size or a little more (:func:`_parts`) by every detector but
    ``colocation`` (:data:`OWN_DATA`), and of each part's frames only the co-location columns are
    kept. The devices they may share a network with (their neighbourhood) are read in parts too,
    for those columns only, and ``colocation`` then judges the whole neighbourhood at once (so a
    cluster is judged whole, and its findings are those of one frame of every device). Verdicts of
    the neighbours are not made. A scoring batch grows by the marked devices of its neighbourhood
    (:class:`farmwatch.collector.scoring.Scorer`) and the largest co-location clusters reach
    hundreds of devices: held whole, their frames made each scoring process's peak memory.

    A device with reports the reducer refused (:func:`farmwatch.collector.rollups.refusals`) has
    them as its own error evidence, at least ``review`` (such reports never become windows, so they
    reach no one else's frames). Raises ValueError for a naive ``now`` or a detection config naming
    unknown detectors, RecordError when the windows break a detector (as
    :func:`farmwatch.detectors.pipeline.score` does, so :mod:`farmwatch.collector.isolation` can
    find the device). ``neighbourhood``: the devices to load when the caller read them already
    (:func:`farmwatch.collector.rollups.neighbours` of ``devices``, or of devices whose
    neighbourhood holds them all: the scorer reads it to claim the neighbours)."""
    since = now - timedelta(hours=config.lookback_hours)
    if reduce_first:
        catch_up(storage, now, since)
    wanted = set(devices)
    fleet = baselines or current_baselines(storage, now, config)
    reads = fleet_reads or FleetReads.read(storage, since)
    anchors, suppressed = storage.anchors(), storage.suppressed_detectors(now)
    fleet_last_report = reads.last_window_end()

    with paused_gc():
        loaded = set(neighbourhood) | wanted if neighbourhood is not None else neighbours(storage, wanted)
        roster = reads.roster_of(loaded)
        context = detection_context(roster, anchors, now, config.detection, fleet_last_report)
        fitted = fleet.fitted(config.detection)
        detected: dict[str, list[DeviceFinding]] = {name: [] for name in REGISTRY}
        colocated: list[pd.DataFrame] = []
        scored: set[str] = set()
        network_kinds: dict[str, str] = {}
        for part in _parts(sorted(wanted), config.batch_devices):
            frames = frames_from_columns(windows(storage, part, since))
            for name, found in detect(frames, context, OWN_DATA, fitted).items():
                detected[name].extend(found)
            scored.update(frames.reports["device_id"].unique())
            network_kinds.update(_newest_network_kinds(frames, wanted))
            colocated.append(frames.reports[list(REPORT_COLUMNS)])
            del frames  # the next part's frames take its place
        for part in _parts(sorted(loaded - wanted), config.batch_devices):
            colocated.append(frames_from_columns(windows(storage, part, since)).reports[list(REPORT_COLUMNS)])
        detected.update(detect(_colocation_frames(colocated), context, [ColocationDetector.name]))
        del colocated
        verdicts = verdicts_of(scored, detected, context, suppressed)
    mine = {v.device_id: v for v in verdicts}  # in the pipeline's order
    employees = {entry.device_id: entry.employee_id for entry in roster}
    refused = refusals(storage, wanted, since)
    for device, reasons in sorted(refused.items()):
        mine[device] = with_refusals(mine.get(device), device, employees.get(device), reasons, now, config.detection)
    return DeviceScores(list(mine.values()), network_kinds,
                        {device: reasons[-1] for device, reasons in refused.items()})


OWN_DATA = tuple(name for name in REGISTRY if name != ColocationDetector.name)
"""The detectors that judge each device on its own windows (and the fleet baselines, the roster and
anchors): run on a part of a batch's devices, each gives their findings as on all the batch's. Only
``colocation`` reads other devices' windows, and of them only :data:`REPORT_COLUMNS`."""


def _parts(devices: Sequence[str], size: int) -> list[Sequence[str]]:
    """``devices`` in consecutive, even parts of at least ``size`` and fewer than twice that (all in
    one part when fewer than ``2 * size``). Not at most ``size``: each part costs every detector's
    fixed work once more (about 0.1 CPU s at 20,000 laptops), and a claimed batch is usually a
    little over ``size`` (the claim and its marked neighbours: 120-150 devices with ``size`` 100),
    so parts of at most ``size`` doubled the detectors' calls: about 15 CPU s more in one interval
    there, for no lower peak (docs/scaling.md)."""
    count = max(len(devices) // size, 1) if devices else 0
    return [devices[len(devices) * i // count:len(devices) * (i + 1) // count] for i in range(count)]


def _colocation_frames(parts: Sequence[pd.DataFrame]) -> Frames:
    """Frames holding only the co-location columns of ``parts`` (``Frames.reports`` columns of
    disjoint sets of devices, each sorted by device and window end), as one frame of all those
    devices would hold them: sorted by device id, ``device_code`` renumbered 0.. in that order."""
    empty = frames_from_columns([])
    if not parts:
        return dataclasses.replace(empty, reports=empty.reports[list(REPORT_COLUMNS)])
    reports = pd.concat(parts, ignore_index=True)
    codes = pd.factorize(reports["device_id"].to_numpy(), sort=True)[0]
    order = np.argsort(codes, kind="stable")  # each device's rows stay in their order
    reports = reports.iloc[order].reset_index(drop=True)
    reports["device_code"] = codes[order]
    return dataclasses.replace(empty, reports=reports)


def _newest_network_kinds(frames: Frames, wanted: set[str]) -> dict[str, str]:
    """Each wanted device's ``network_kind`` of its newest window (its last row: the rows are sorted
    by device, then window end), unless missing: only each device's last row is looked at (a
    groupby of every row took about 6 ms per part of 130 devices)."""
    first, rows = device_runs(frames.reports["device_code"].to_numpy())
    last = first + rows - 1
    devices = frames.reports["device_id"].to_numpy()[last]
    kinds = frames.reports["network_kind"].to_numpy()[last]
    # A missing kind is NaN in the frame's text column, not None: pd.notna tells either apart.
    return {str(d): str(k) for d, k in zip(devices, kinds) if d in wanted and pd.notna(k)}


def current_baselines(storage: Storage, now: datetime, config: CollectorConfig) -> Baselines:
    """The stored baselines, or freshly computed (and stored) ones when those are missing, older than
    ``BASELINE_MAX_AGE`` or were learned under another detection config."""
    stored = load_baselines(storage)
    if stored is not None and baselines_fresh(stored, now, config):
        return stored
    return refresh_baselines(storage, now, config)


def baselines_fresh(stored: Baselines, now: datetime, config: CollectorConfig, ahead: timedelta = timedelta(0)) -> bool:
    """Whether ``stored`` were learned under ``config``'s detection settings and are younger than
    ``BASELINE_MAX_AGE`` still ``ahead`` from ``now`` (the scorer's keeper refreshes them ahead of
    time, so a scoring run never has to: :class:`farmwatch.collector.scoring.BaselineKeeper`)."""
    return stored.params == _params_digest(config) and now + ahead - stored.computed_at < BASELINE_MAX_AGE


def refresh_baselines(storage: Storage, now: datetime, config: CollectorConfig) -> Baselines:
    """Learn the fleet baselines from every device's rollups in the lookback window and store them.

    Holds one batch of ``BASELINE_BATCH`` devices' frames at a time: the rows input rhythm learns
    from (typed windows, five columns) and one feature row per device are all that is kept."""
    since = now - timedelta(hours=config.lookback_hours)
    detection = config.detection
    context = Context(roster={e.device_id: e for e in storage.roster()}, anchors={}, now=now, config=detection)
    rhythm = InputRhythmDetector(**detection.params(InputRhythmDetector.name))
    anomaly = FleetAnomalyDetector(**_with_random_state(detection, FleetAnomalyDetector.name))
    typed, features = [], []
    devices = devices_since(storage, since)  # sorted: the features come out in a full re-read's order
    def learn(batch: Sequence[str]) -> None:
        frames = frames_from_columns(windows(storage, batch, since))
        found = rhythm.typed_windows(frames.reports)
        features.append(raw_device_features(frames, context, anomaly.interval_seconds, anomaly.active_seconds))
        typed.append(found)

    with paused_gc():
        for start in range(0, len(devices), BASELINE_BATCH):
            # One device's windows must not stop the fleet's baselines, and so every verdict: learn
            # without the devices that break it (each is then scored alone and earns its own
            # scoring_error, farmwatch.collector.isolation).
            for device, failure in isolate(learn, devices[start:start + BASELINE_BATCH]).items():
                log.warning("device %s left out of the fleet baselines: %s", device, failure)
    empty = frames_from_columns([])
    fleet_typed = pd.concat(typed, ignore_index=True) if typed else empty.reports
    rhythm.fit(dataclasses.replace(empty, reports=fleet_typed), context)
    baselines = Baselines(now, _params_digest(config), rhythm.thresholds_,
                          pd.concat(features) if features else pd.DataFrame(columns=list(FEATURES), dtype=float))
    _store(storage, baselines)
    log.info("fleet baselines refreshed over %d devices", len(devices))
    return baselines


def load_baselines(storage: Storage) -> Baselines | None:
    """The stored baselines, if any were computed."""
    with storage.engine.connect() as connection:
        row = connection.execute(sa.select(fleet_baselines).where(fleet_baselines.c.name == BASELINE)).first()
    if row is None:
        return None
    body = orjson.loads(row.body)
    features = pd.DataFrame(body["features"]["data"], index=pd.Index(body["features"]["index"], name="device_id"),
                            columns=body["features"]["columns"], dtype=float)
    return Baselines(row.computed_at, row.params, body["input_thresholds"], features)


def _store(storage: Storage, baselines: Baselines) -> None:
    features = baselines.device_features
    body = orjson.dumps({
        "input_thresholds": baselines.input_thresholds,
        "features": {"columns": list(features.columns), "index": [str(d) for d in features.index],
                     "data": features.to_numpy().tolist()},
    }, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    values = {"computed_at": baselines.computed_at, "params": baselines.params, "body": body}
    with storage._writer.begin() as tx:
        if not tx.execute(fleet_baselines.update().where(fleet_baselines.c.name == BASELINE).values(**values)).rowcount:
            tx.execute(fleet_baselines.insert().values(name=BASELINE, **values))


def _with_random_state(config: DetectionConfig, name: str) -> dict[str, Any]:
    params = config.params(name)
    params.setdefault("random_state", config.random_state)
    return params


def _params_digest(config: CollectorConfig) -> str:
    detection = config.detection
    learned: Mapping[str, Any] = {
        "lookback_hours": config.lookback_hours, "random_state": detection.random_state,
        **{name: dict(detection.params(name)) for name in (InputRhythmDetector.name, FleetAnomalyDetector.name)},
    }
    return hashlib.sha256(orjson.dumps(learned, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
