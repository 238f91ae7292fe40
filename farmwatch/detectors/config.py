"""Detection settings: the risk combiner's thresholds and each detector's parameters, in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DetectionConfig:
    """Thresholds of the risk combiner (see :mod:`farmwatch.detectors.risk`) and detector parameters.

    ``detectors`` maps a detector name to keyword arguments for its ``__init__``, so a deployment
    can tune one detector (``{"colocation": {"min_cluster": 3}}``) without touching code.
    ``corporate_networks`` are the company's own egress CIDRs (collector config ``[geo]``): devices
    sharing them are colleagues in an office, not a farm, and egress there is not "unknown".
    """

    review_threshold: float = 0.5
    farm_threshold: float = 0.8
    weak_cap: float = 0.3
    corroboration: float = 0.25
    corporate_networks: tuple[str, ...] = ()
    random_state: int = 0
    detectors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def params(self, name: str) -> dict[str, Any]:
        """The keyword arguments configured for detector ``name`` (empty when none are)."""
        return dict(self.detectors.get(name, {}))
