"""``splunk_hec``: Splunk HTTP Event Collector. ``url`` is the event endpoint
(``https://splunk.example.com:8088/services/collector/event``), ``token_file`` holds the HEC token.

Per Splunk's "Format events for HTTP Event Collector": a batch is event objects concatenated in one
POST with ``Authorization: Splunk <token>``; each object carries ``time`` (epoch seconds), ``host``,
``source``, ``sourcetype`` (config, default ``farmwatch:alert``), ``index`` (config, optional) and
``event`` (the alert's JSON, whose ``alert_id`` is stable across retries). Splunk accepts with HTTP
200 and ``{"text":"Success","code":0}``; anything else is a failed delivery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from farmwatch.collector.alerts import Alert
from farmwatch.collector.outputs.base import TLS_OPTIONS, Check, DeliveryFailed, Output, OutputSettings, secret_file, text
from farmwatch.collector.outputs.http import HttpPoster, summary


class SplunkHecOutput(Output):
    type_name = "splunk_hec"
    formats = ("json",)
    schemes = ("http", "https")
    options: ClassVar[dict[str, Check]] = {"token_file": secret_file, "sourcetype": text, "index": text, **TLS_OPTIONS}
    required: ClassVar[tuple[str, ...]] = ("token_file",)

    def __init__(self, settings: OutputSettings) -> None:
        super().__init__(settings)
        self.token: str = settings.options["token_file"]
        self.sourcetype: str = settings.options.get("sourcetype", "farmwatch:alert")
        self.index: str | None = settings.options.get("index")
        self.poster = HttpPoster(settings.url, settings.options, f"output {settings.name!r}")

    def format(self, alert: Alert) -> bytes:
        event: dict[str, Any] = {
            "time": round(alert.raised_at.timestamp(), 3),
            "host": alert.hostname,
            "source": "farmwatch",
            "sourcetype": self.sourcetype,
            "event": alert.document(),
        }
        if self.index:
            event["index"] = self.index
        return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()

    def send(self, batch: Sequence[Alert]) -> str:
        status, answer = self.poster.post(b"\n".join(self.format(alert) for alert in batch), {
            "Authorization": f"Splunk {self.token}",
            "Content-Type": "application/json",
        })
        try:
            code = json.loads(answer).get("code")
        except (ValueError, AttributeError):
            code = None
        if code != 0:
            raise DeliveryFailed(f"HEC answered HTTP {status} without code 0: {summary(answer)}")
        return f"HTTP {status} {summary(answer)}"
