"""HTTPS: the collector serves TLS with an operator's certificate, and the real agent trusts it via ca_file."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from certificates import self_signed
from collector_helpers import serve_refusal
from collector_process import SERVE, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate"),
]


def test_agent_reports_over_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    db = f"sqlite:///{tmp_path / 'farmwatch.db'}"
    with open(tmp_path / "collector.log", "wb") as log:
        server = subprocess.Popen(
            [*SERVE, "--port", str(port), "--db", db, "--enroll-secret-file", str(secret),
             "--analyst-token-file", str(secret), "--tls-cert-file", str(cert), "--tls-key-file", str(key)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "collector.log").read_text())
        with pytest.raises(httpx.ConnectError):  # the system CAs do not vouch for this certificate
            httpx.get(f"{url}/healthz", timeout=5)

        agent_config = tmp_path / "agent.toml"
        agent_config.write_text(f'[agent]\nca_file = "{cert}"\n')
        done = subprocess.run(
            [sys.executable, "-m", "farmwatch.agent.cli", "once", "--collector", url, "--enroll-secret-file", str(secret),
             "--state-dir", str(tmp_path / "state"), "--config", str(agent_config), "--window", "0.5"],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        exported = subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "export", "--db", db],
                                  capture_output=True, text=True, timeout=60)
        assert [json.loads(line)["report"]["seq"] for line in exported.stdout.splitlines()] == [1]
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_serve_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path)
    (other := tmp_path / "other").mkdir()
    _cert2, key2 = self_signed(other)
    message = serve_refusal(tmp_path, "", "--tls-cert-file", str(cert), "--tls-key-file", str(key2))
    assert message.startswith("farmwatch-collector: cannot use TLS certificate")
