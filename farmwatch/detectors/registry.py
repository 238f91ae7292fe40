"""Every detector the pipeline runs, by name (a plain dict: no import-time side effects)."""

from __future__ import annotations

from farmwatch.detectors.signals.agent_health import AgentHealthDetector
from farmwatch.detectors.signals.always_on import AlwaysOnDetector
from farmwatch.detectors.base import Detector
from farmwatch.detectors.signals.colocation import ColocationDetector
from farmwatch.detectors.signals.fleet_anomaly import FleetAnomalyDetector
from farmwatch.detectors.signals.geo_mismatch import GeoMismatchDetector
from farmwatch.detectors.signals.host_mismatch import HostMismatchDetector
from farmwatch.detectors.signals.input_rhythm import InputRhythmDetector
from farmwatch.detectors.signals.ipkvm import IpKvmDetector
from farmwatch.detectors.signals.location_proof import LocationProofDetector
from farmwatch.detectors.signals.remote_access import RemoteAccessDetector
from farmwatch.detectors.signals.session_distance import SessionDistanceDetector
from farmwatch.detectors.signals.working_hours import WorkingHoursDetector

REGISTRY: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        RemoteAccessDetector,
        SessionDistanceDetector,
        LocationProofDetector,
        GeoMismatchDetector,
        HostMismatchDetector,
        WorkingHoursDetector,
        InputRhythmDetector,
        IpKvmDetector,
        ColocationDetector,
        AlwaysOnDetector,
        AgentHealthDetector,
        FleetAnomalyDetector,
    )
}
