"""The agent runs without the collector's libraries; collector commands name the missing extra.

Each test starts a fresh interpreter whose ``sys.meta_path`` begins with a finder that refuses the
blocked packages (as if they were not installed) and records every attempt to import them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from farmwatch.contract import Report

COLLECTOR_ONLY = ["pandas", "sklearn", "fastapi", "sqlalchemy", "uvicorn", "httpx"]

BLOCKING_LAUNCHER = """
import importlib.abc, json, sys
blocked, record, entry, *argv = sys.argv[1:]
blocked = set(blocked.split(","))
requested = []

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            requested.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import farmwatch.entry
sys.argv = ["farmwatch-" + entry, *argv]
try:
    code = getattr(farmwatch.entry, entry)()
finally:
    with open(record, "w") as out:
        json.dump(sorted(set(requested)), out)
sys.exit(code)
"""


def launch(tmp_path: Path, blocked: list[str], entry: str, *argv: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    record = tmp_path / "requested.json"
    done = subprocess.run(
        [sys.executable, "-c", BLOCKING_LAUNCHER, ",".join(blocked), str(record), entry, *argv],
        capture_output=True, text=True, timeout=120,
    )
    requested: list[str] = json.loads(record.read_text()) if record.exists() else ["<launcher crashed>"]
    return done, requested


def test_the_agent_prints_a_report_without_any_collector_library(tmp_path: Path) -> None:
    done, requested = launch(tmp_path, COLLECTOR_ONLY, "agent", "once", "--print", "--window", "0.1")
    assert done.returncode == 0, done.stderr
    assert requested == []  # not even attempted: no probe or agent module reaches for them
    report = Report.model_validate_json(done.stdout)
    assert report.device_id and report.seq == 1


def test_the_agent_imports_neither_ctypes_nor_configparser_on_linux(tmp_path: Path) -> None:
    """Each held a few hundred KB of the agent's resident memory (issue 13): on Linux only the DNS
    answer listener needed ctypes, for an address the array module gives; configparser reads an
    fcitx5 profile, which this machine's users do not have."""
    done, requested = launch(tmp_path, ["ctypes", "configparser"], "agent", "once", "--print", "--window", "0.1")
    assert done.returncode == 0, done.stderr
    assert requested == []


def test_a_collector_command_without_its_extra_names_the_extra_in_one_line(tmp_path: Path) -> None:
    done, requested = launch(tmp_path, COLLECTOR_ONLY, "collector", "export", "--db", str(tmp_path / "x.db"))
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "pip install 'farmwatch[collector]'" in done.stderr
    assert requested


def test_serve_without_fastapi_names_the_extra_in_one_line(tmp_path: Path) -> None:
    done, _ = launch(tmp_path, ["fastapi"], "collector", "serve", "--db", str(tmp_path / "x.db"), "--port", "1")
    assert "Traceback" not in done.stderr
    assert "pip install 'farmwatch[collector]'" in done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0


def test_the_input_listeners_outside_x11_load_without_python_xlib() -> None:
    """python-xlib is installed on Linux only: pynput (Windows, macOS) and evdev must not need it."""
    code = ("import sys; sys.modules['Xlib'] = None\n"
            "import farmwatch.agent.probes.input.pynput_listener, farmwatch.agent.probes.input.evdev_listener\n"
            "import farmwatch.agent.probes.input.probe")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _agent_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    return [Requirement(text) for text in pyproject["project"]["optional-dependencies"]["agent"]]


def test_windows_gets_the_iana_zone_database_with_the_agent() -> None:
    """zoneinfo reads the OS's zone files, which Windows lacks; the tzdata package stands in."""
    [tzdata] = [r for r in _agent_requirements() if r.name == "tzdata"]
    assert tzdata.marker is not None
    assert tzdata.marker.evaluate({"sys_platform": "win32"}) and not tzdata.marker.evaluate({"sys_platform": "linux"})


ZONE_WITHOUT_SYSTEM_DATABASE = """
import json
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.host.probe import HostProbe
answers = {("tzutil", "/g"): "US Mountain Standard Time"}
def run(argv):
    if tuple(argv) not in answers:
        raise FileNotFoundError(2, "not installed", argv[0])
    return answers[tuple(argv)]
probe = HostProbe(ProbeContext(platform="win32", run=run, clock=lambda: 1782907200.0))
facts = probe.collect()
print(json.dumps([facts.timezone, facts.utc_offset_minutes]))
"""


def test_with_no_system_zone_files_the_host_probe_uses_the_tzdata_package(tmp_path: Path) -> None:
    """As on Windows: PYTHONTZPATH names an empty folder, so only the tzdata package can answer."""
    env = {**os.environ, "PYTHONTZPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", ZONE_WITHOUT_SYSTEM_DATABASE], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["America/Phoenix", -420]
