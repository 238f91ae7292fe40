"""The detector interface: a small estimator-like class that turns frames into findings.

Like a scikit-learn estimator, ``__init__`` only stores parameters, ``fit`` learns a fleet
baseline (state ending in ``_``) and ``detect`` returns findings. A detector is pure: it reads the
flattened ingest records (:class:`~farmwatch.detectors.frame.Frames`) and the roster and anchors in
:class:`Context`; it never touches HTTP, SQL or the clock.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from farmwatch.contract import Anchor, Finding, RosterEntry, Severity
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import Frames

if TYPE_CHECKING:
    from pandas.core.groupby import DataFrameGroupBy


@dataclass(frozen=True)
class Context:
    """What a detector may know besides the records: who should hold each device, and where.

    ``fleet_last_report``: the newest window end of the whole fleet when the frames hold only some
    devices (scoring from rollups, :mod:`farmwatch.collector.incremental`); None: the frames' own."""

    roster: dict[str, RosterEntry]
    anchors: dict[str, Anchor]
    now: datetime
    config: DetectionConfig
    fleet_last_report: datetime | None = None


@dataclass(frozen=True)
class DeviceFinding:
    """A finding attached to the device it is about."""

    device_id: str
    finding: Finding


class Detector(ABC):
    """One signal. Subclasses set the class attributes and implement :meth:`detect`.

    ``group`` names the evidence the detector reads; the risk combiner lets findings of one group
    count once, so two views of the same fact do not compound. ``weak`` detectors (a keyboard
    layout, night work) only add to others: alone they cannot raise a device to review.
    """

    name: ClassVar[str]
    group: ClassVar[str]
    weak: ClassVar[bool] = False
    attack: ClassVar[str | None] = None

    def fit(self, frames: Frames, context: Context) -> Detector:
        """Learn a fleet baseline; most detectors need none."""
        return self

    @abstractmethod
    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        """Findings for every device the records show something about."""

    def finding(
        self,
        device_id: str,
        score: float,
        summary: str,
        evidence: dict[str, Any],
        first_seen: Any = None,
        last_seen: Any = None,
        attack: str | None = None,
    ) -> DeviceFinding:
        """Build a contract ``Finding`` for ``device_id``; the severity follows from the score."""
        score = round(min(max(float(score), 0.0), 1.0), 4)
        finding = Finding(
            detector=self.name,
            severity=severity_of(score),
            score=score,
            summary=summary,
            evidence={key: plain(value) for key, value in evidence.items()},
            attack=attack if attack is not None else self.attack,
            first_seen=_time(first_seen),
            last_seen=_time(last_seen),
        )
        return DeviceFinding(device_id, finding)

    def combined(
        self,
        device_id: str,
        parts: dict[str, float],
        sentences: list[str],
        lead: str,
        evidence: dict[str, Any],
        first_seen: Any = None,
        last_seen: Any = None,
    ) -> DeviceFinding | None:
        """One finding from independent sub-signals: their scores combined by :func:`noisy_or`, their
        sentences joined after ``lead``, the parts kept in the evidence; None when there are none."""
        if not parts:
            return None
        summary = lead + "; ".join(sentences) + "."
        return self.finding(device_id, noisy_or(parts.values()), summary, {**evidence, "parts": parts},
                            first_seen, last_seen)


def device_runs(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each device's first row and row count, devices in order, for rows sorted by device (a
    ``device_code`` column, whole or filtered: each device's rows are one contiguous run)."""
    codes = np.asarray(codes)
    if not len(codes):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.diff(codes, prepend=codes[0] - 1))
    return first, np.diff(first, append=len(codes))


def aggregated_columns(grouped: DataFrameGroupBy, **columns: tuple[str, str]) -> pd.DataFrame:
    """What ``grouped.agg(**columns)`` gives (named aggregation: each output column a pair of input
    column and reduction), from each column's own reduction over the one grouping: named aggregation
    plans the whole aggregation anew on every call, a few ms that a scoring run pays for each
    detector and part of every batch (issue 12: about 170 parts at 20,000 laptops), whatever the
    part's size."""
    return pd.DataFrame({name: getattr(grouped[column], how)() for name, (column, how) in columns.items()})


def device_ids(reports: pd.DataFrame) -> np.ndarray:
    """The device id of each ``device_code`` of a whole ``Frames.reports`` (its codes are dense):
    ``device_ids(reports)[code]``."""
    first, _ = device_runs(reports["device_code"].to_numpy())
    return reports["device_id"].to_numpy()[first]


def noisy_or(scores: Iterable[float]) -> float:
    """Probability that at least one of several independent signals is right: ``1 - prod(1 - s)``."""
    remaining = 1.0
    for score in scores:
        remaining *= 1.0 - score
    return 1.0 - remaining


def severity_of(score: float) -> Severity:
    """Severity bands over the score: info < 0.2 <= low < 0.4 <= medium < 0.6 <= high < 0.8 <= critical."""
    if score >= 0.8:
        return "critical"
    if score >= 0.6:
        return "high"
    if score >= 0.4:
        return "medium"
    if score >= 0.2:
        return "low"
    return "info"


def plain(value: Any) -> Any:
    """Evidence as JSON-ready Python values (numpy scalars, timestamps and NaN made plain)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = sorted(value) if isinstance(value, set) else value
        return [plain(item) for item in items]
    if isinstance(value, pd.Timestamp):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


def _time(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    return pd.Timestamp(value).to_pydatetime()
