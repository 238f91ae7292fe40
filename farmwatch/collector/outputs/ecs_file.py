"""``ecs_file``: ECS documents (:mod:`.ecs`) as NDJSON in a size-rotated file for Filebeat or
Elastic Agent (their ``filestream`` input with the ``ndjson`` parser). ``url`` is the file's absolute
path; ``max_bytes`` and ``backups`` set the rotation (:mod:`.ndjson_file`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from farmwatch.collector.alerts import Alert
from farmwatch.collector.outputs import ecs
from farmwatch.collector.outputs.base import Check, Output, OutputSettings, file_path
from farmwatch.collector.outputs.ndjson_file import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES, FILE_OPTIONS, RotatingNdjson


class EcsFileOutput(Output):
    type_name = "ecs_file"
    formats = ("ecs",)
    schemes = ("file",)
    options: ClassVar[dict[str, Check]] = dict(FILE_OPTIONS)

    def __init__(self, settings: OutputSettings) -> None:
        super().__init__(settings)
        self.file = RotatingNdjson(
            file_path(settings.url), settings.options.get("max_bytes", DEFAULT_MAX_BYTES),
            settings.options.get("backups", DEFAULT_BACKUPS), f"output {settings.name!r} url")

    def format(self, alert: Alert) -> bytes:
        return ecs.line(alert)

    def send(self, batch: Sequence[Alert]) -> str:
        return self.file.write([self.format(alert) for alert in batch])
