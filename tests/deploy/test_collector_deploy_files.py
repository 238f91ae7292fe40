"""The collector's shipped service unit, example config and Prometheus rules work as they stand."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from collector_process import DEFAULT_CONFIG, RunningCollector
from prometheus_client.parser import text_string_to_metric_families

from farmwatch.collector.cli import build_parser
from farmwatch.collector.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "collector" / "farmwatch-collector.service"
RULES = DEPLOY / "prometheus" / "farmwatch-alerts.yml"


def exec_start() -> list[str]:
    [line] = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line)


def test_the_units_command_line_parses() -> None:
    program, *argv = exec_start()
    assert Path(program).name == "farmwatch-collector"
    args = build_parser().parse_args(argv)
    assert (args.host, args.port, args.config) == ("0.0.0.0", 8765, Path("/etc/farmwatch/collector.toml"))
    # the secrets come in as systemd credentials, which the unit loads from /etc/farmwatch
    assert str(args.enroll_secret_file) == "${CREDENTIALS_DIRECTORY}/enroll-secret"
    assert "LoadCredential=enroll-secret:/etc/farmwatch/enroll-secret" in UNIT.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    installed = Path(sys.executable).parent / "farmwatch-collector"  # verify checks that ExecStart exists
    unit = tmp_path / "farmwatch-collector.service"
    unit.write_text(UNIT.read_text().replace("/opt/farmwatch/bin/farmwatch-collector", str(installed)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_example_config_loads(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    config = load_config(DEPLOY / "collector" / "collector.toml", enroll_secret_file=secret, analyst_token_file=secret)
    assert (config.detection_interval_seconds, config.lookback_hours, config.agent_interval_seconds) == (300, 72, 300)
    assert (config.detection.review_threshold, config.detection.farm_threshold) == (0.5, 0.8)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian package prometheus, see deploy/dev/system-packages.txt)")
def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(["promtool", "test", "rules", "rules-test.yml"], cwd=RULES.parent,
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.slow
def test_every_metric_the_rules_name_is_one_the_collector_exposes(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    # One output configured, so the per-output outbox series exist too.
    output = f'\n[[outputs]]\ntype = "ecs_file"\nurl = "{tmp_path / "alerts.ndjson"}"\n'
    collector = collector_factory(DEFAULT_CONFIG + output)
    exposed = {sample.name for family in text_string_to_metric_families(httpx.get(f"{collector.url}/metrics").text)
               for sample in family.samples}
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    named = {name for rule in rules for name in re.findall(r"\bfarmwatch_[a-z_]+", rule["expr"])}
    assert named and named <= exposed, sorted(named - exposed)
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], rule["alert"]
