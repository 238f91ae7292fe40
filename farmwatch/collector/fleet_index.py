"""The fleet index: one flat row per scored device, so the console ranks and filters 100,000 devices
with indexed columns instead of parsing every stored verdict.

Rows are built here from what a scoring run already holds (its verdicts, the roster, the newest
network kind per device) and stored with the verdicts in one transaction, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from farmwatch.contract import RosterEntry, Verdict

COLOCATION = "colocation"


def cluster_of(verdict: Verdict) -> str | None:
    """The co-location cluster a verdict places its device in: the cluster's smallest device id."""
    for finding in verdict.findings:
        members = finding.evidence.get("devices") if finding.detector == COLOCATION else None
        if members:
            return str(min(members))
    return None


def fleet_rows(
    verdicts: Sequence[Verdict], roster: Sequence[RosterEntry], network_kinds: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One ``fleet_index`` row per verdict."""
    cities = {entry.device_id: entry.city for entry in roster}
    rows = []
    for verdict in verdicts:
        top = verdict.findings[0] if verdict.findings else None  # findings come strongest first
        detectors = sorted({finding.detector for finding in verdict.findings})
        rows.append({
            "device_id": verdict.device_id,
            "risk": verdict.risk,
            "verdict": verdict.verdict,
            "employee_id": verdict.employee_id,
            "city": cities.get(verdict.device_id),
            "network_kind": network_kinds.get(verdict.device_id),
            "top_detector": top.detector if top else None,
            "top_summary": top.summary if top else None,
            "detectors": "|" + "|".join(detectors) + "|" if detectors else "",
            "cluster": cluster_of(verdict),
        })
    return rows
