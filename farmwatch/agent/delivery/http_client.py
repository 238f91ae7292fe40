"""HTTP(S) to the collector with the standard library: one connection per request.

The agent makes a handful of requests per five-minute window, so a fresh connection each time
costs nothing that matters and leaves no idle keep-alive connection to go stale. httpx did the same
job for several MB more resident memory (bench/agent_cost.py), which a 20 MB budget cannot spare.
Redirects are not followed: an agent posting reports must not be sent elsewhere silently.

Corporate laptops often reach the outside only through a proxy. The agent honours the usual
environment variables (``https_proxy``/``HTTPS_PROXY`` for an https:// collector, ``http_proxy``/
``HTTP_PROXY`` for http://, ``no_proxy``/``NO_PROXY`` for hosts to reach directly), read as
:mod:`urllib.request` reads them: an https collector is reached through a ``CONNECT`` tunnel (TLS
stays end to end, the certificate checked as without a proxy), an http one by sending the absolute
URL to the proxy. ``user:password@`` in the proxy URL becomes Basic ``Proxy-Authorization``.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json as jsonlib
import os
import re
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from farmwatch.agent.errors import UsageError

TRANSPORT_ERRORS = (OSError, http.client.HTTPException)
"""What a request raises when no answer came: refused, reset, timed out, TLS refused, garbled."""


@dataclass(frozen=True)
class Response:
    """The collector's answer to one request."""

    status_code: int
    content: bytes
    retry_after: float | None = None  # seconds from the Retry-After header (RFC 9110 10.2.3), if any

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; raises :class:`ValueError` if it is not."""
        return jsonlib.loads(self.content)


class CollectorClient:
    """Requests to paths under one base URL (``http://`` or ``https://``, optionally with a path)."""

    def __init__(self, base_url: str, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        """``tls`` checks an https collector's certificate; None trusts the system's CAs
        (:func:`system_trust`). The proxy settings are read from the environment here, once."""
        self.base_url = base_url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path
        self._timeout = timeout
        self._tls = (tls or system_trust()) if parts.scheme == "https" else None
        self.proxy = proxy_for(parts)

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
        target = self._prefix + path
        if self.proxy is not None and self._tls is None:  # a forwarding proxy wants the absolute URL
            target = f"http://{self._host}{'' if self._port is None else f':{self._port}'}{target}"
            sent.update(self.proxy.authorization)
        connection = self._connect()
        try:
            connection.request(method, target, body=content, headers=sent)
            answer = connection.getresponse()
            return Response(answer.status, answer.read(), retry_after_seconds(answer.getheader("Retry-After")))
        finally:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self.proxy is None:
            if self._tls is not None:
                return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._tls)
            return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        if self._tls is None:
            return http.client.HTTPConnection(self.proxy.host, self.proxy.port, timeout=self._timeout)
        tunnel = http.client.HTTPSConnection(self.proxy.host, self.proxy.port, timeout=self._timeout, context=self._tls)
        tunnel.set_tunnel(self._host, self._port, headers=dict(self.proxy.authorization))
        return tunnel


_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")  # <subject hash>.<n>: OpenSSL's hashed directory entries


def system_trust() -> ssl.SSLContext:
    """Trust in the system's CAs, as ``ssl.create_default_context()`` gives it, without loading them all.

    That call loads the whole system bundle into the agent (144 CAs on Debian: about 1 MB of its
    resident memory, bench/agent_cost.py, against a 40 MB budget). On Linux the same CAs sit in
    OpenSSL's hashed directory (``<subject hash>.0`` links, made by update-ca-certificates), which
    OpenSSL reads one issuer at a time while verifying a certificate; that directory is used where
    it is hashed. Elsewhere, without hashed entries (e.g. a distribution shipping only a bundle), or
    when ``SSL_CERT_FILE`` names a bundle, the whole default store is loaded as before."""
    if sys.platform.startswith("linux") and not os.environ.get("SSL_CERT_FILE"):
        directory = os.environ.get("SSL_CERT_DIR") or ssl.get_default_verify_paths().openssl_capath
        try:
            hashed = any(_HASHED_NAME.fullmatch(entry) for entry in os.listdir(directory))
        except OSError:
            hashed = False
        if hashed:
            return ssl.create_default_context(capath=directory)
    return ssl.create_default_context()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


@dataclass(frozen=True)
class Proxy:
    """Where to send requests instead, and the credentials it asks for (none when empty)."""

    host: str
    port: int
    authorization: tuple[tuple[str, str], ...] = ()


def proxy_for(collector: urllib.parse.SplitResult) -> Proxy | None:
    """The proxy the environment names for this collector URL; None to connect directly.

    Raises :class:`UsageError` for a proxy setting that is not an http:// URL with a host."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # what getproxies_environment would find; urllib.request (~0.4 MB resident) stays unloaded
    import urllib.request

    found = urllib.request.getproxies_environment()
    address = found.get(collector.scheme)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # CPython's, not in typeshed
    if not address or bypass(collector.hostname or "", found):
        return None
    parts = urllib.parse.urlsplit(address if "://" in address else f"http://{address}")
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"{collector.scheme}_proxy must be an http://host:port URL, got {address!r}")
    authorization: tuple[tuple[str, str], ...] = ()
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        authorization = (("Proxy-Authorization", "Basic " + base64.b64encode(pair.encode()).decode()),)
    return Proxy(parts.hostname, parts.port or 8080, authorization)

