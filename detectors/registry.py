"""Every detector the pipeline runs, by name (a plain dict: no import-time side effects)."""

from __future__ import annotations

from farmwatch.detectors.agent_health import AgentHealthDetector
from farmwatch.detectors.always_on import AlwaysOnDetector
from farmwatch.detectors.base import Detector
from farmwatch.detectors.colocation import ColocationDetector
from farmwatch.detectors.fleet_anomaly import FleetAnomalyDetector
from farmwatch.detectors.geo_mismatch import GeoMismatchDetector
from farmwatch.detectors.host_mismatch import HostMismatchDetector
from farmwatch.detectors.input_rhythm import InputRhythmDetector
from farmwatch.detectors.ipkvm import IpKvmDetector
from farmwatch.detectors.location_proof import LocationProofDetector
from farmwatch.detectors.remote_access import RemoteAccessDetector
from farmwatch.detectors.session_distance import SessionDistanceDetector
from farmwatch.detectors.working_hours import WorkingHoursDetector

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
