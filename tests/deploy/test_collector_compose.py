"""`podman-compose up` of deploy/collector/compose.yaml: two collector replicas on one PostgreSQL
behind the proxy, after the one-shot `migrate` service upgraded its schema; the same report sent to each
replica is stored once.

The collector services run exactly as compose.yaml writes them, from the image its Containerfile
builds. What the test changes, because these machines reach no registry and must publish nothing
beyond loopback: PostgreSQL and nginx run from images made of Debian's packages
(tests/fixtures/containers/, standing in for the official images the file names); the proxy is
published on a free 127.0.0.1 port instead of *:8080; relative paths become absolute; the
collector's prebuilt image is used instead of compose's build step (which cannot be given the
runtime, ulimit and CA flags podman needs here); Prometheus and Grafana are not started (Grafana
has no Debian package; their files are checked in test_collector_container_files.py); and the
replicas' `depends_on: migrate` (service_completed_successfully) is left out, because podman 4.3 cannot
start a container whose required container has exited and requires another ("not found in input
list"): the replicas then wait for the migration as they do wherever that condition is not honoured,
refusing to start on the empty schema (`--migrate check`) and being restarted (`restart: on-failure`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from collector_process import free_port
from podman_images import build, collector_image, debian_image, missing_tools, podman, ulimit_flags

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "collector" / "compose.yaml"
FIXTURES = REPO / "tests" / "fixtures"
STARTED = ("postgres", "migrate", "collector-1", "collector-2", "proxy")
# PyPI's podman-compose (the dev extra): Debian bookworm's 1.0.3 cannot give a service a fixed
# address on a named network (compose.yaml's proxy has one).
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman needs root"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"missing {', '.join(missing_tools())} "
                       "(Debian packages in deploy/dev/system-packages.txt)"),
    pytest.mark.skipif(not PODMAN_COMPOSE.exists(), reason="podman-compose is not installed (pip, the dev extra)"),
]


def _absolute(source: str, folder: Path) -> str:
    """A volume source relative to compose.yaml made absolute; named volumes stay as they are."""
    return str((folder / source).resolve()) if source.startswith(".") else source


def _derived_compose(tmp_path: Path, proxy_port: int) -> Path:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    folder = COMPOSE.parent
    services = {name: compose["services"][name] for name in STARTED}
    base = debian_image(("postgresql", "nginx-light"))
    containers = FIXTURES / "containers"
    services["postgres"]["image"] = _build_fixture(containers / "postgres.Containerfile", "postgres", base)
    services["proxy"]["image"] = _build_fixture(containers / "nginx.Containerfile", "nginx", base)
    services["proxy"]["ports"] = [f"127.0.0.1:{proxy_port}:8080"]
    for name, service in services.items():
        service.pop("build", None)
        if name.startswith("collector"):  # both replicas are one YAML anchor: one dict, rebuilt whole
            service["depends_on"] = {k: v for k, v in service["depends_on"].items() if k != "migrate"}
        service["volumes"] = [
            ":".join([_absolute(v.split(":")[0], folder), *v.split(":")[1:]]) for v in service.get("volumes", [])
        ]
        if not service["volumes"]:
            del service["volumes"]
    compose["services"] = services
    for secret in compose["secrets"].values():
        secret["file"] = str(tmp_path / "secrets" / Path(secret["file"]).name)
    derived = tmp_path / "compose.yaml"
    derived.write_text(yaml.safe_dump(compose, sort_keys=False))
    return derived


def _build_fixture(containerfile: Path, name: str, base: str) -> str:
    return build(containerfile, f"localhost/farmwatch-test-{name}:latest", base, containerfile.parent)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(project, proxy URL, enrol secret) of the stack, brought up and always torn down."""
    collector_image("localhost/farmwatch-collector:latest")  # the image name compose.yaml uses
    (tmp_path / "secrets").mkdir(mode=0o700)
    enrol_secret = secrets.token_urlsafe(24)
    for name, value in (("enroll-secret", enrol_secret), ("analyst-token", secrets.token_urlsafe(24))):
        (tmp_path / "secrets" / name).write_text(value + "\n")
        (tmp_path / "secrets" / name).chmod(0o644)  # as deploy/README.md says: the collector's uid reads them
    port = free_port()
    project = f"farmwatch-test-{port}"
    compose = [str(PODMAN_COMPOSE), "--in-pod", "false", "--podman-args", "--runtime runc", "--podman-run-args", " ".join(ulimit_flags()),
               "-p", project, "-f", str(_derived_compose(tmp_path, port))]
    env = {**os.environ, "FARMWATCH_DB_PASSWORD": secrets.token_hex(16)}
    log = tmp_path / "compose.log"
    try:
        with open(log, "w") as out:
            up = subprocess.run([*compose, "up", "-d", "--no-build"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                timeout=600)
        assert up.returncode == 0, log.read_text()[-5000:]
        yield project, f"http://127.0.0.1:{port}", enrol_secret
    finally:
        subprocess.run([*compose, "down", "-v"], capture_output=True, env=env, timeout=300)


def _inside(project: str, service: str, code: str, stdin: str = "") -> str:
    """Run Python in a collector container (the replica itself, not through the proxy)."""
    return podman("exec", "-i", _container(project, service), "python3", "-c", code, timeout=120, stdin=stdin).stdout


def _container(project: str, service: str) -> str:
    """The name podman-compose gave the service's container (found by the labels it sets)."""
    names = podman("ps", "--all", "--filter", f"label=io.podman.compose.project={project}",
                   "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").stdout.split()
    assert len(names) == 1, (service, names)
    return names[0]


POST_REPORT = """
import json, sys, urllib.request, urllib.error
body = sys.stdin.read().encode()
token = json.loads(body)["token"]
report = json.dumps(json.loads(body)["report"]).encode()
request = urllib.request.Request("http://127.0.0.1:8765/api/v1/reports", data=report, method="POST",
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
try:
    answer = urllib.request.urlopen(request, timeout=30)
    print(answer.status, answer.read().decode())
except urllib.error.HTTPError as refused:
    print(refused.code, refused.read().decode())
"""


def _logs(project: str) -> str:
    """The last lines each started service logged, for a failure's message."""
    tails = []
    for service in STARTED:
        done = subprocess.run(["podman", "logs", "--tail", "15", _container(project, service)], capture_output=True,
                              text=True, timeout=60)
        tails.append(f"--- {service}\n{done.stdout}{done.stderr}")
    return "\n".join(tails)


def _wait_ready(project: str, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"the proxy at {url} did not answer /healthz 200 within {timeout} s\n{_logs(project)}")


@pytest.mark.timeout(1200)  # image builds on 2 cores
def test_two_replicas_on_one_postgresql_store_a_report_sent_to_each_once(stack: tuple[str, str, str]) -> None:
    project, url, enrol_secret = stack
    _wait_ready(project, url)
    # the one-shot migration step ran to completion on the empty database before the replicas served
    migrated = podman("inspect", "--format", "{{.State.ExitCode}}", _container(project, "migrate")).stdout.strip()
    assert migrated == "0", _logs(project)
    assert "upgraded from an empty database to revision" in podman("logs", _container(project, "migrate")).stdout
    for replica in ("collector-1", "collector-2"):  # both up, each answering on its own port
        deadline = time.monotonic() + 120
        while "200" not in _healthz(project, replica) and time.monotonic() < deadline:
            time.sleep(1)
        assert "200" in _healthz(project, replica), replica
    enrolled = httpx.post(f"{url}/api/v1/enroll", timeout=30,
                          json={"enroll_secret": enrol_secret, "hostname": "compose-laptop", "hardware_id": "hw-compose-1"})
    assert enrolled.status_code == 200, enrolled.text
    device = enrolled.json()
    report = json.loads((FIXTURES / "reports" / "report-linux-rustdesk.json").read_text())
    now = datetime.now(timezone.utc)
    report.update(device_id=device["device_id"], seq=1,
                  window_start=(now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
                  window_end=now.isoformat().replace("+00:00", "Z"))
    body = json.dumps({"token": device["token"], "report": report})
    answers = [_inside(project, replica, POST_REPORT, body).split(" ", 1)[0] for replica in ("collector-1", "collector-2")]
    assert answers == ["202", "202"]  # the second replica recognises the copy the first stored
    exported = podman("exec", _container(project, "collector-1"), "farmwatch-collector", "export", "--db",
                      "postgresql://farmwatch@postgres:5432/farmwatch").stdout
    stored = [json.loads(line)["report"] for line in exported.splitlines() if line.strip()]
    assert [(r["device_id"], r["seq"]) for r in stored] == [(device["device_id"], 1)]


def _healthz(project: str, replica: str) -> str:
    code = ("import urllib.request\ntry:\n print(urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=5).status)"
            "\nexcept Exception as e:\n print(e)")
    return _inside(project, replica, code)
