"""``ocsf``: the alert as an OCSF Detection Finding (class 2004), for Amazon Security Lake, Sentinel
and other OCSF pipelines; NDJSON to a rotating file (``url`` an absolute path) or POSTed to http(s).

Schema: OCSF 1.3.0, schema.ocsf.io/1.3.0/classes/detection_finding. Required there: ``activity_id``
(1 Create for a raised alert, 2 Update for a change, 3 Close for a resolution), ``category_uid`` 2
(Findings), ``class_uid`` 2004, ``type_uid`` = class_uid * 100 + activity_id, ``finding_info``
(``uid``, ``title``; ATT&CK in ``finding_info.attacks``), ``metadata`` (``product``, ``version``),
``severity_id`` (1 Informational … 5 Critical), ``time`` (epoch milliseconds). Recommended and used:
``status_id`` (1 New, 4 Resolved), ``risk_score``, ``risk_level_id``, ``device``, ``evidences``,
``message``. Fields OCSF has no place for go in ``unmapped``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import farmwatch
from farmwatch.collector.alerts import Alert
from farmwatch.collector.outputs.base import TLS_OPTIONS, Check, Output, OutputConfigError, OutputSettings, file_path
from farmwatch.collector.outputs.http import HttpPoster, summary
from farmwatch.collector.outputs.ndjson_file import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, FILE_OPTIONS, RotatingNdjson

OCSF_VERSION = "1.3.0"
CLASS_UID, CATEGORY_UID = 2004, 2
ACTIVITY = {"raised": (1, "Create"), "changed": (2, "Update"), "resolved": (3, "Close")}
SEVERITY = {"clear": (1, "Informational"), "review": (3, "Medium"), "farm": (5, "Critical")}
RISK_LEVEL = {"clear": (0, "Info"), "review": (2, "Medium"), "farm": (4, "Critical")}


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def detection_finding(alert: Alert) -> dict[str, Any]:
    """The OCSF Detection Finding of one alert."""
    activity_id, activity = ACTIVITY[alert.kind]
    severity_id, severity = SEVERITY[alert.verdict]
    risk_level_id, risk_level = RISK_LEVEL[alert.verdict]
    resolved = alert.kind == "resolved"
    return {
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": CLASS_UID * 100 + activity_id,
        "time": _millis(alert.raised_at),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 4 if resolved else 1,
        "status": "Resolved" if resolved else "New",
        "message": alert.title(),
        "risk_score": round(alert.risk * 100),
        "risk_level_id": risk_level_id,
        "risk_level": risk_level,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert.alert_id,
            "product": {"name": "farmwatch", "vendor_name": "farmwatch", "version": farmwatch.__version__},
        },
        "finding_info": {
            "uid": alert.alert_id,
            "title": alert.title(),
            "desc": "\n".join(finding.summary for finding in alert.findings),
            "types": ["laptop farm"],
            "first_seen_time": _millis(alert.first_seen),
            "last_seen_time": _millis(alert.last_seen),
            "src_url": alert.link,
            "attacks": [{"technique": {"uid": technique}, "version": "v15"} for technique in alert.attack_ids],
        },
        "device": {"uid": alert.device_id, "hostname": alert.hostname, "type_id": 3, "type": "Laptop"},
        "evidences": [{"data": {"detector": f.detector, "summary": f.summary, "score": f.score, **f.evidence}}
                      for f in alert.findings],
        "unmapped": {
            "employee_id": alert.employee_id,
            "claimed_city": alert.claimed_city,
            "claimed_country": alert.claimed_country,
            "verdict": alert.verdict,
            "previous_verdict": alert.previous_verdict,
            "test": alert.test,
        },
    }


class OcsfOutput(Output):
    type_name = "ocsf"
    formats = ("ocsf",)
    schemes = ("file", "http", "https")
    options: ClassVar[dict[str, Check]] = {**FILE_OPTIONS, **TLS_OPTIONS}

    def __init__(self, settings: OutputSettings) -> None:
        super().__init__(settings)
        where = f"output {settings.name!r}"
        self.http = urlsplit(settings.url).scheme in ("http", "https")
        wrong = set(settings.options) & set(FILE_OPTIONS if self.http else TLS_OPTIONS)
        if wrong:
            raise OutputConfigError(f"{where}: {', '.join(sorted(wrong))} do(es) not apply to url {settings.url!r}")
        self.poster = HttpPoster(settings.url, settings.options, where) if self.http else None
        self.file = None if self.http else RotatingNdjson(
            file_path(settings.url), settings.options.get("max_bytes", DEFAULT_MAX_BYTES),
            settings.options.get("backups", DEFAULT_BACKUPS), f"{where} url")

    def format(self, alert: Alert) -> bytes:
        return json.dumps(detection_finding(alert), separators=(",", ":"), sort_keys=True).encode()

    def send(self, batch: Sequence[Alert]) -> str:
        lines = [self.format(alert) for alert in batch]
        if self.file is not None:
            return self.file.write(lines)
        assert self.poster is not None
        status, text = self.poster.post(b"".join(line + b"\n" for line in lines), {
            "Content-Type": "application/x-ndjson",
            "X-Farmwatch-Alert-Ids": ",".join(alert.alert_id for alert in batch),
        })
        return f"HTTP {status} {summary(text)}".strip()
