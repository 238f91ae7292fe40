"""One HTTP POST for the HTTP outputs (splunk_hec, ecs_http, ocsf, webhook), with the stdlib client.

The collector ships no HTTP client library (httpx is a test tool here), and one POST with a TLS
context is all the outputs need. Accepted means a 2xx answer (RFC 9110 §15.3); anything else, or
no answer within the timeout, is :class:`DeliveryFailed` with what the receiver said.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from farmwatch.collector.outputs.base import DeliveryFailed, client_tls

TIMEOUT_SECONDS = 10.0


class HttpPoster:
    """POSTs bodies to one URL; ``options`` may hold ca_file, cert_file, key_file (https only)."""

    def __init__(self, url: str, options: Mapping[str, Any], where: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.context: ssl.SSLContext | None = client_tls(options, where) if self.https else None

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST ``body``; returns (status, answer) for a 2xx, raises DeliveryFailed otherwise."""
        if self.context is not None:
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=TIMEOUT_SECONDS, context=self.context)
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_SECONDS)
        try:
            connection.request("POST", self.target, body=body, headers={"Content-Length": str(len(body)), **headers})
            answer = connection.getresponse()
            status, text = answer.status, answer.read(64 * 1024)
        except (OSError, http.client.HTTPException) as failure:
            raise DeliveryFailed(f"POST {self.url}: {type(failure).__name__}: {failure}") from None
        finally:
            connection.close()
        if not 200 <= status < 300:
            raise DeliveryFailed(f"POST {self.url}: HTTP {status} {summary(text)}")
        return status, text


def summary(answer: bytes) -> str:
    """The start of a receiver's answer on one line, for logs and `outputs test`."""
    return " ".join(answer[:300].decode("utf-8", "replace").split())
