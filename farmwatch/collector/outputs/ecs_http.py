"""``ecs_http``: ECS documents (:mod:`.ecs`) POSTed as NDJSON (``application/x-ndjson``, one document a
line) to an HTTP endpoint: a Logstash or Elastic Agent ``http`` input, Vector, Fluent Bit. Each
document's ``event.id`` is the stable alert id, and ``X-Farmwatch-Alert-Ids`` lists the batch's ids,
so a receiver can drop a batch it already took."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from farmwatch.collector.alerts import Alert
from farmwatch.collector.outputs import ecs
from farmwatch.collector.outputs.base import TLS_OPTIONS, Check, Output, OutputSettings
from farmwatch.collector.outputs.http import HttpPoster, summary


class EcsHttpOutput(Output):
    type_name = "ecs_http"
    formats = ("ecs",)
    schemes = ("http", "https")
    options: ClassVar[dict[str, Check]] = dict(TLS_OPTIONS)

    def __init__(self, settings: OutputSettings) -> None:
        super().__init__(settings)
        self.poster = HttpPoster(settings.url, settings.options, f"output {settings.name!r}")

    def format(self, alert: Alert) -> bytes:
        return ecs.line(alert)

    def send(self, batch: Sequence[Alert]) -> str:
        body = b"".join(self.format(alert) + b"\n" for alert in batch)
        status, text = self.poster.post(body, {
            "Content-Type": "application/x-ndjson",
            "X-Farmwatch-Alert-Ids": ",".join(alert.alert_id for alert in batch),
        })
        return f"HTTP {status} {summary(text)}".strip()
