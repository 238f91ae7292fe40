"""The agent's HTTP client against a real loopback server, plain and TLS.

The server records what arrived, so each test checks the bytes the collector would see.
"""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from certificates import self_signed
from throwaway_ca import make_pki

from farmwatch.agent.delivery.http_client import TRANSPORT_ERRORS, CollectorClient, system_trust


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every request with 201 and a JSON echo of it; 503 for paths under /busy."""

    seen: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        answer = json.dumps({"path": self.path}).encode()
        self.send_response(503 if self.path.startswith("/busy") else 201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:  # the test reads what it needs from `seen`
        pass


@contextmanager
def _server(tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, seen
    finally:
        server.shutdown()
        server.server_close()


def test_json_and_gzip_bodies_arrive_as_sent_under_the_base_path() -> None:
    with _server() as (port, seen):
        client = CollectorClient(f"http://127.0.0.1:{port}/farmwatch/", timeout=5)
        enrolled = client.request("POST", "/api/v1/enroll", json={"enroll_secret": "s"})
        packed = gzip.compress(b'{"seq": 1}')
        reported = client.request("POST", "/api/v1/reports", content=packed,
                                  headers={"Content-Encoding": "gzip", "Authorization": "Bearer t"})
    assert (enrolled.status_code, enrolled.json()) == (201, {"path": "/farmwatch/api/v1/enroll"})
    assert reported.text == '{"path": "/farmwatch/api/v1/reports"}'
    assert json.loads(seen[0]["body"]) == {"enroll_secret": "s"}
    assert seen[0]["headers"]["Content-Type"] == "application/json"
    assert seen[1]["body"] == packed
    assert seen[1]["headers"]["Content-Encoding"] == "gzip" and seen[1]["headers"]["Authorization"] == "Bearer t"


def test_a_5xx_is_an_answer_and_a_closed_port_a_transport_error() -> None:
    with _server() as (port, _):
        assert CollectorClient(f"http://127.0.0.1:{port}", timeout=5).request("GET", "/busy").status_code == 503
    with pytest.raises(TRANSPORT_ERRORS):
        CollectorClient(f"http://127.0.0.1:{port}", timeout=5).request("GET", "/healthz")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_https_trusts_the_given_ca_and_not_an_unknown_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(cert, key)
    with _server(serving) as (port, _):
        url = f"https://127.0.0.1:{port}"
        with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not vouch for it
            CollectorClient(url, timeout=5).request("GET", "/healthz")
        trusted = CollectorClient(url, timeout=5, tls=ssl.create_default_context(cafile=str(cert)))
        assert trusted.request("GET", "/healthz").status_code == 201


def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        CollectorClient("https://", timeout=5)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test CA")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hashed CA directory is read on Linux")
def test_the_system_cas_are_read_from_the_hashed_directory_one_issuer_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust through OpenSSL's hashed directory (as update-ca-certificates lays it out): no CA is
    loaded before a handshake needs its issuer, a server it vouches for is trusted, an unknown one
    refused; SSL_CERT_FILE (a bundle) still loads the whole store."""
    pki = make_pki(tmp_path / "pki")
    hashed = tmp_path / "certs"
    hashed.mkdir()
    shutil.copy(pki.ca, hashed / "test-ca.pem")
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(hashed))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(pki.server_cert, pki.server_key)
    with _server(serving) as (port, _):
        trust = system_trust()
        assert trust.cert_store_stats()["x509_ca"] == 0  # nothing loaded up front
        assert CollectorClient(f"https://127.0.0.1:{port}", timeout=5).request("GET", "/healthz").status_code == 201
    stranger, stranger_key = self_signed(tmp_path)
    serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    serving.load_cert_chain(stranger, stranger_key)
    with _server(serving) as (port, _), pytest.raises(ssl.SSLCertVerificationError):
        CollectorClient(f"https://127.0.0.1:{port}", timeout=5).request("GET", "/healthz")
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    assert system_trust().cert_store_stats()["x509_ca"] == 1  # a bundle is loaded whole, as OpenSSL would
