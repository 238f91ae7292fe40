"""The shipped service definitions (systemd, launchd) and example config work as they stand."""

from __future__ import annotations

import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from farmwatch.agent.cli import build_parser
from farmwatch.agent.settings import load_file

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "agent"


def test_the_units_command_line_parses() -> None:
    unit = (DEPLOY / "farmwatch-agent.service").read_text().splitlines()
    [exec_start] = [line.split("=", 1)[1] for line in unit if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "farmwatch-agent"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run" and args.config == Path("/etc/farmwatch/agent.toml")


def test_the_example_config_is_valid() -> None:
    table = load_file(DEPLOY / "agent.toml")
    assert table["collector"].startswith("https://") and table["salt"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    installed = Path(sys.executable).parent / "farmwatch-agent"  # verify checks that ExecStart exists
    text = (DEPLOY / "farmwatch-agent.service").read_text().replace("/usr/bin/farmwatch-agent", str(installed))
    unit = tmp_path / "farmwatch-agent.service"
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_launchd_job_parses_and_runs_the_agent_as_a_service() -> None:
    job = plistlib.loads((DEPLOY / "com.farmwatch.agent.plist").read_bytes())
    program, *argv = job["ProgramArguments"]
    assert Path(program).name == "farmwatch-agent" and job["Umask"] == 0o077
    args = build_parser().parse_args(argv)
    assert args.command == "run" and args.state_dir == Path("/Library/Application Support/farmwatch-agent")
