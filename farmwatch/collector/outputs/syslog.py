"""``syslog``: RFC 5424 messages carrying CEF (default) or the alert's JSON, over UDP, TCP or TLS.

- Message: RFC 5424 §6 ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG``. The
  facility is 4 "security/authorization" (§6.2.1 table 1); the severity (table 2) is 2 critical for
  farm, 4 warning for review, 5 notice for a resolution. No structured data (``-``): the payload says
  it all and needs no private enterprise number. MSG is plain UTF-8 without the BOM (§6.4 allows
  MSG-ANY), because CEF parsers expect ``CEF:`` at the start.
- ``udp://host:port``: one message per datagram (RFC 5426 §3.1); nothing acknowledges it, so
  "accepted" means the kernel took the datagram.
- ``tcp://host:port``: octet counting, ``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 §3.4.1), the framing that
  survives line breaks in a message.
- ``tls://host:port``: RFC 5425: TLS, then the same octet-counted frames (§4.3). ``ca_file`` is the CA
  that signed the receiver's certificate, ``cert_file``/``key_file`` our client certificate, and
  ``server_name`` the name the receiver's certificate must carry (default: the URL's host).
A batch goes over one connection; it is accepted once every byte was written and the connection
closed cleanly (syslog has no application-level acknowledgement). Over TLS the receiver first gets
half a second to refuse our client certificate, so a refused session is a failed delivery instead
of alerts written into a connection the receiver already dropped.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import ClassVar
from urllib.parse import urlsplit

from farmwatch.collector.alerts import Alert
from farmwatch.collector.outputs import cef
from farmwatch.collector.outputs.base import (
    TLS_OPTIONS,
    Check,
    DeliveryFailed,
    Output,
    OutputConfigError,
    OutputSettings,
    client_tls,
    text,
)

TIMEOUT_SECONDS = 10.0
ADMISSION_WAIT_SECONDS = 0.5  # how long a TLS receiver has to refuse our client certificate
FACILITY_SECURITY = 4
SEVERITY = {"farm": 2, "review": 4, "clear": 5}
APP_NAME = "farmwatch"
NIL = "-"


def timestamp(moment: datetime) -> str:
    """RFC 5424 §6.2.3 TIMESTAMP: RFC 3339 in UTC with milliseconds, e.g. 2003-10-11T22:14:15.003Z."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def header_field(value: str | None, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (§6), at most ``limit`` long, or the NILVALUE."""
    if not value:
        return NIL
    printable = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)
    return printable[:limit]


def syslog_message(
    pri: int, moment: datetime, hostname: str | None, app_name: str | None, procid: str | None,
    msgid: str | None, structured_data: str | None, msg: str,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG (§6), version 1."""
    head = " ".join([
        f"<{pri}>1", timestamp(moment), header_field(hostname, 255), header_field(app_name, 48),
        header_field(procid, 128), header_field(msgid, 32), structured_data or NIL,
    ])
    return f"{head} {msg}".encode()


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425 §4.3 framing: the message's length in bytes, a space, the message."""
    return str(len(message)).encode() + b" " + message


class SyslogOutput(Output):
    type_name = "syslog"
    formats = ("cef", "json")
    schemes = ("udp", "tcp", "tls")
    options: ClassVar[dict[str, Check]] = {**TLS_OPTIONS, "server_name": text}

    def __init__(self, settings: OutputSettings, hostname: str | None = None) -> None:
        super().__init__(settings)
        parts = urlsplit(settings.url)
        self.transport = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (6514 if self.transport == "tls" else 514)
        where = f"output {settings.name!r}"
        if self.transport != "tls" and set(settings.options) & {*TLS_OPTIONS, "server_name"}:
            raise OutputConfigError(f"{where}: ca_file, cert_file, key_file and server_name need a tls:// url")
        self.context = client_tls(settings.options, where) if self.transport == "tls" else None
        self.server_name = settings.options.get("server_name", self.host)
        self.hostname = hostname or socket.gethostname()

    def format(self, alert: Alert) -> bytes:
        if self.settings.format == "cef":
            payload = cef.format_alert(alert)
        else:
            payload = json.dumps(alert.document(), separators=(",", ":"), sort_keys=True)
        return syslog_message(
            FACILITY_SECURITY * 8 + SEVERITY[alert.verdict], alert.raised_at, self.hostname, APP_NAME,
            str(os.getpid()), "test" if alert.test else f"verdict-{alert.verdict}", None, payload,
        )

    def send(self, batch: Sequence[Alert]) -> str:
        messages = [self.format(alert) for alert in batch]
        try:
            if self.transport == "udp":
                return self._send_udp(messages)
            return self._send_stream(messages)
        except OSError as failure:
            raise DeliveryFailed(f"{self.settings.url}: {type(failure).__name__}: {failure}") from None

    def _send_udp(self, messages: Sequence[bytes]) -> str:
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as sender:
            for message in messages:
                sender.sendto(message, family[4])
        return f"{len(messages)} datagram(s) sent (UDP has no acknowledgement)"

    def _send_stream(self, messages: Sequence[bytes]) -> str:
        with socket.create_connection((self.host, self.port), timeout=TIMEOUT_SECONDS) as plain:
            if self.context is not None:
                with self.context.wrap_socket(plain, server_hostname=self.server_name) as secure:
                    self._check_admitted(secure)
                    secure.sendall(b"".join(octet_counted(m) for m in messages))
                    version = secure.version()
                return f"{len(messages)} message(s) written over {version}"
            plain.sendall(b"".join(octet_counted(m) for m in messages))
            plain.shutdown(socket.SHUT_WR)
        return f"{len(messages)} message(s) written over TCP"

    def _check_admitted(self, secure: ssl.SSLSocket) -> None:
        """Refuse to write into a session the receiver is about to drop.

        With TLS 1.3 the client's handshake ends before the server has checked the client
        certificate, so a refused certificate shows only as the server's alert or close right
        after; syslog receivers never send data, so anything but a quiet wait means refused.
        """
        secure.settimeout(ADMISSION_WAIT_SECONDS)
        try:
            early = secure.recv(1)
        except TimeoutError:
            return  # the receiver kept the session open: it admitted us
        except ssl.SSLError as refused:
            raise DeliveryFailed(f"{self.settings.url}: the receiver refused the TLS session: {refused}") from None
        finally:
            secure.settimeout(TIMEOUT_SECONDS)
        if not early:
            raise DeliveryFailed(f"{self.settings.url}: the receiver closed the TLS session after the handshake "
                                 "(does it accept our client certificate?)")
