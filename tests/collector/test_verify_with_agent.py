"""POST /api/v1/verify driven by the real client: `farmwatch-agent verify` against a real collector."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from collector_helpers import auth
from collector_process import RunningCollector

pytestmark = pytest.mark.slow
EXIT_OF = {"clear": 0, "review": 2, "farm": 1}


def test_agent_verify_prints_the_collectors_verdict(collector: RunningCollector, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "farmwatch.agent.cli", "verify", "--collector", collector.url,
         "--enroll-secret-file", str(collector.enroll_secret_file), "--state-dir", str(tmp_path / "state"),
         "--seconds", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    (device,) = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token)).json()
    assert device["verdict"] in EXIT_OF
    assert done.returncode == EXIT_OF[device["verdict"]], done.stdout + done.stderr
    # A device token reads the label only: the risk is its band's lower bound, and no reasons (issue 15).
    band = {"clear": 0.0, "review": 0.5, "farm": 0.8}[device["verdict"]]
    assert f"verdict: {device['verdict']} (risk {band:.2f}) for device {device['device_id']}" in done.stdout
    assert not re.search(r"^\s+\[(info|low|medium|high|critical)\] ", done.stdout, re.MULTILINE), done.stdout
