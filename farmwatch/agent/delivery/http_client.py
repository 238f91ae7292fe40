"""HTTP(S) to the collector with the standard library: one connection per request.

The agent makes a handful of requests per five-minute window, so a fresh connection each time
costs nothing that matters and leaves no idle keep-alive connection to go stale. httpx did the same
job for several MB more resident memory (bench/agent_cost.py), which a 20 MB budget cannot spare.
Redirects are not followed: an agent posting reports must not be sent elsewhere silently.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
"""What a request raises when no answer came: refused, reset, timed out, TLS refused, garbled."""


@dataclass(frozen=True)
class Response:
    """The collector's answer to one request."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; raises :class:`ValueError` if it is not."""
        return jsonlib.loads(self.content)


class CollectorClient:
    """Requests to paths under one base URL (``http://`` or ``https://``, optionally with a path)."""

    def __init__(self, base_url: str, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        """``tls`` checks an https collector's certificate; None trusts the system's CAs."""
        self.base_url = base_url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path
        self._timeout = timeout
        self._tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send one request and read the whole answer; raises one of :data:`TRANSPORT_ERRORS`."""
        sent = dict(headers or {})
        if json is not None:
            content = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        connection = self._connect()
        try:
            connection.request(method, self._prefix + path, body=content, headers=sent)
            answer = connection.getresponse()
            return Response(answer.status, answer.read())
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
