"""``webhook``: the alert as JSON POSTed to a SOAR or chat endpoint, signed with HMAC-SHA256.

Headers: ``X-Farmwatch-Timestamp`` (Unix seconds), ``X-Farmwatch-Signature: sha256=<hex>`` where the
hex is HMAC-SHA256 (RFC 2104, FIPS 180-4) keyed with the ``secret_file`` contents over
``<timestamp>.<body>``, and ``X-Farmwatch-Alert-Id`` (the same on every retry: drop duplicates by it).
The receiver recomputes the HMAC and rejects an old timestamp, so a captured request cannot be
replayed later. One request per alert; a batch stops at the first refusal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from farmwatch.collector.alerts import Alert
from farmwatch.collector.outputs.base import TLS_OPTIONS, Check, DeliveryFailed, Output, OutputSettings, secret_file
from farmwatch.collector.outputs.http import HttpPoster, summary


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Farmwatch-Signature value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookOutput(Output):
    type_name = "webhook"
    formats = ("json",)
    schemes = ("http", "https")
    options: ClassVar[dict[str, Check]] = {"secret_file": secret_file, **TLS_OPTIONS}
    required: ClassVar[tuple[str, ...]] = ("secret_file",)
    batch_size = 20  # one request each: a batch of slow answers must still end well within the outbox lease

    def __init__(self, settings: OutputSettings, clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings)
        self.secret: str = settings.options["secret_file"]
        self.poster = HttpPoster(settings.url, settings.options, f"output {settings.name!r}")
        self.clock = clock

    def format(self, alert: Alert) -> bytes:
        return json.dumps(alert.document(), separators=(",", ":"), sort_keys=True).encode()

    def send(self, batch: Sequence[Alert]) -> str:
        answers = []
        for sent, alert in enumerate(batch):
            body = self.format(alert)
            timestamp = str(int(self.clock()))
            try:
                status, text = self.poster.post(body, {
                    "Content-Type": "application/json",
                    "X-Farmwatch-Timestamp": timestamp,
                    "X-Farmwatch-Signature": signature(self.secret, timestamp, body),
                    "X-Farmwatch-Alert-Id": alert.alert_id,
                })
            except DeliveryFailed as refused:
                raise DeliveryFailed(str(refused), accepted=sent) from None
            answers.append(f"HTTP {status} {summary(text)}".strip())
        return answers[0] if len(set(answers)) == 1 else "; ".join(answers)
