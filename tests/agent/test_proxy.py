"""The agent reaches the collector through a real proxy (Debian's tinyproxy) named in its environment.

An http:// collector is reached by sending the absolute URL to the proxy, an https:// one through a
CONNECT tunnel (the agent still checks the collector's own certificate), ``NO_PROXY`` hosts
directly, and ``user:password@`` in the proxy URL answers the proxy's Basic authentication. The
proxy's log shows what went through it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from certificates import self_signed
from collector_process import SERVE, RunningCollector, free_port, wait_for_tls

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tinyproxy") is None, reason="needs tinyproxy (deploy/dev/system-packages.txt)"),
]


@dataclass
class Tinyproxy:
    url: str
    log: Path

    def requests(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _start_tinyproxy(folder: Path, allow_connect_to: int, basic_auth: str | None = None) -> tuple[subprocess.Popen[bytes], Tinyproxy]:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o777)  # tinyproxy may drop to an unprivileged user and still writes its log here
    port = free_port()
    log = folder / "tinyproxy.log"
    config = folder / "tinyproxy.conf"
    config.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{log}\"\nLogLevel Info\nMaxClients 20\n"
        f"Allow 127.0.0.1\nConnectPort {allow_connect_to}\n" + (f"BasicAuth {basic_auth}\n" if basic_auth else "")
    )
    process = subprocess.Popen(["tinyproxy", "-d", "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=open(folder / "stderr.log", "wb"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    else:
        process.kill()
    if process.poll() is not None:
        pytest.fail("tinyproxy did not start: " + (folder / "stderr.log").read_text(errors="replace"))
    return process, Tinyproxy(f"http://127.0.0.1:{port}", log)


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator:
    started: list[subprocess.Popen[bytes]] = []

    def start(allow_connect_to: int, basic_auth: str | None = None) -> Tinyproxy:
        process, proxy = _start_tinyproxy(tmp_path / f"proxy{len(started)}", allow_connect_to, basic_auth)
        started.append(process)
        return proxy

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def _agent_once(url: str, secret: Path, state: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return subprocess.run(
        [sys.executable, "-m", "farmwatch.agent.cli", "once", "--collector", url, "--enroll-secret-file", str(secret),
         "--state-dir", str(state), "--window", "0.3", *extra],
        capture_output=True, text=True, timeout=120, env={**clean, **env},
    )


def _seqs(collector: RunningCollector) -> list[int]:
    exported = collector.cli("export", "--db", collector.db_url)
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line)["report"]["seq"] for line in exported.stdout.splitlines()]


def test_an_http_collector_is_reached_through_the_forward_proxy(collector: RunningCollector, proxy_factory,
                                                               tmp_path: Path) -> None:
    proxy = proxy_factory(collector.port)
    done = _agent_once(collector.url, collector.enroll_secret_file, tmp_path / "state", {"HTTP_PROXY": proxy.url})
    assert done.returncode == 0, done.stderr
    assert _seqs(collector) == [1]
    assert f"POST http://127.0.0.1:{collector.port}/api/v1/reports" in proxy.requests()


def test_no_proxy_hosts_are_reached_directly(collector: RunningCollector, tmp_path: Path) -> None:
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens: only a direct connection can deliver
    env = {"http_proxy": dead_proxy, "no_proxy": "localhost,127.0.0.1"}
    done = _agent_once(collector.url, collector.enroll_secret_file, tmp_path / "state", env)
    assert done.returncode == 0, done.stderr
    assert _seqs(collector) == [1]


def test_a_dead_proxy_is_used_when_named(collector: RunningCollector, tmp_path: Path) -> None:
    """The converse: without no_proxy the agent goes to the (dead) proxy and delivers nothing."""
    done = _agent_once(collector.url, collector.enroll_secret_file, tmp_path / "state",
                       {"http_proxy": f"http://127.0.0.1:{free_port()}"})
    assert done.returncode != 0
    assert _seqs(collector) == []


def test_proxy_basic_authentication_from_the_proxy_url(collector: RunningCollector, proxy_factory,
                                                      tmp_path: Path) -> None:
    proxy = proxy_factory(collector.port, basic_auth="agent s3cret")
    authenticated = proxy.url.replace("http://", "http://agent:s3cret@")
    done = _agent_once(collector.url, collector.enroll_secret_file, tmp_path / "state", {"HTTP_PROXY": authenticated})
    assert done.returncode == 0, done.stderr
    assert _seqs(collector) == [1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_an_https_collector_is_reached_through_a_connect_tunnel(proxy_factory, tmp_path: Path) -> None:
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
    try:
        wait_for_tls(port, cert, 300)
        proxy = proxy_factory(port)
        agent_config = tmp_path / "agent.toml"
        agent_config.write_text(f'[agent]\nca_file = "{cert}"\n')
        done = _agent_once(url, secret, tmp_path / "state", {"HTTPS_PROXY": proxy.url}, "--config", str(agent_config))
        assert done.returncode == 0, done.stderr
        assert f"CONNECT 127.0.0.1:{port}" in proxy.requests()
        exported = subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "export", "--db", db],
                                  capture_output=True, text=True, timeout=60)
        assert [json.loads(line)["report"]["seq"] for line in exported.stdout.splitlines()] == [1]
    finally:
        server.terminate()
        server.wait(timeout=15)
