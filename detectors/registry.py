"""Every detector the pipeline runs, by name (a plain dict: no import-time side effects)."""

from __future__ import annotations

from farmwatch.detectors.base import Detector
from farmwatch.detectors.remote_access import RemoteAccessDetector

REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        RemoteAccessDetector,
    )
}
