"""The risk combiner: findings in, one risk number and a verdict out, explainably.

How risk is computed (deterministic; thresholds in :class:`DetectionConfig`):

1. Findings are grouped by the evidence they read (each detector's ``group``). Within a group only
   the strongest finding counts: two views of one fact (an egress country and an anchor RTT both
   saying "not in Ohio") must not compound as if independent.
2. Independent strong groups compound by noisy-OR: ``1 - prod(1 - s_g)``. Two medium signals
   from different evidence make a high risk, as an analyst would judge it.
3. Weak groups (keyboard layout, night work, an odd feature vector) compound among themselves the
   same way, but while no strong group reaches ``corroboration`` their total is capped at
   ``weak_cap`` (below the review threshold): they only add to other evidence.
4. ``risk >= farm_threshold`` -> farm; ``>= review_threshold`` -> review; else clear.

Because the risk is a pure function of the findings, recomputing it from a verdict's findings
gives the verdict's risk: every reason that moved it is in the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable

from farmwatch.contract import Finding, VerdictLabel
from farmwatch.detectors.base import noisy_or
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.registry import REGISTRY


def group_scores(findings: Iterable[Finding]) -> dict[tuple[str, bool], float]:
    """The strongest score per (evidence group, weak?) pair."""
    best: dict[tuple[str, bool], float] = {}
    for finding in findings:
        kind = REGISTRY.get(finding.detector)
        key = (kind.group, kind.weak) if kind else (finding.detector, False)
        best[key] = max(best.get(key, 0.0), finding.score)
    return best


def combine(findings: Iterable[Finding], config: DetectionConfig | None = None) -> float:
    """The device's risk in 0..1 from its findings (see the module docstring)."""
    config = config or DetectionConfig()
    best = group_scores(findings)
    strong = [score for (_, weak), score in sorted(best.items()) if not weak]
    weak = noisy_or(score for (_, is_weak), score in sorted(best.items()) if is_weak)
    if not any(score >= config.corroboration for score in strong):
        weak = min(weak, config.weak_cap)
    return round(noisy_or(strong + [weak]), 4)


def label(risk: float, config: DetectionConfig | None = None) -> VerdictLabel:
    """clear | review | farm for a risk, by the configured thresholds."""
    config = config or DetectionConfig()
    if risk >= config.farm_threshold:
        return "farm"
    if risk >= config.review_threshold:
        return "review"
    return "clear"
