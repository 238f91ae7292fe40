"""`make run` (deploy/dev/devrun.py): a real collector and a real agent come up, report, and both stop on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from collector_process import free_port

pytestmark = pytest.mark.slow
DEVRUN = Path(__file__).resolve().parents[2] / "deploy" / "dev" / "devrun.py"


def test_devrun_reports_this_machine_and_stops_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    out = tmp_path / "devrun.out"
    with open(out, "wb") as sink:
        devrun = subprocess.Popen(
            [sys.executable, str(DEVRUN), "--dir", str(folder), "--port", str(free_port()),
             "--interval", "2"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    try:
        row = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and devrun.poll() is None:
            text = out.read_text()
            found = re.search(r"collector\s+(http://127\.0\.0\.1:\d+)", text)
            if found and (folder / "analyst-token").exists():
                token = (folder / "analyst-token").read_text().strip()
                listed = httpx.get(f"{found.group(1)}/api/v1/devices", headers={"Authorization": f"Bearer {token}"}).json()
                row = next((r for r in listed if r["employee_id"] == "E-LOCAL" and r["verdict"]), None)
                if row:
                    break
            time.sleep(0.5)
        assert row is not None, out.read_text() + (folder / "agent.log").read_text()
        assert "curl -H 'Authorization: Bearer" in out.read_text()
        _signs_in_to_the_console(out.read_text(), row["device_id"])
        assert len(psutil.Process(devrun.pid).children()) == 2  # the collector and the agent
        children = psutil.Process(devrun.pid).children(recursive=True)  # and the collector's reducer

        devrun.send_signal(signal.SIGINT)
        assert devrun.wait(timeout=40) == 0
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert alive == []
        assert "stopping the agent and the collector" in out.read_text()
    finally:
        if devrun.poll() is None:  # the test failed midway: its children sit in their own sessions
            leftovers = psutil.Process(devrun.pid).children(recursive=True)
            devrun.kill()
            devrun.wait()
            for child in leftovers:
                child.kill()


def test_children_end_when_devrun_is_killed(tmp_path: Path) -> None:
    devrun = subprocess.Popen(
        [sys.executable, str(DEVRUN), "--dir", str(tmp_path / "run"), "--port", str(free_port())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(children) < 2:
            # Wait for the two long-lived children (short CLI imports come and go before them).
            children = [c for c in psutil.Process(devrun.pid).children() if {"serve", "run"} & set(_argv(c))]
            time.sleep(0.2)
        assert sorted("serve" in _argv(c) for c in children) == [False, True]
    finally:
        devrun.kill()  # no chance to clean up: the children must notice on their own
        devrun.wait()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []


def _argv(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:  # a short-lived import command that just ended
        return []


def _signs_in_to_the_console(printed: str, device_id: str) -> None:
    """The console address and sign-in devrun prints work, and this machine is on the fleet page."""
    found = re.search(r"console\s+(http://127\.0\.0\.1:\d+)/console/\s+sign in as (\S+), password (\S+)", printed)
    assert found, printed
    url, name, password = found.groups()
    with httpx.Client(base_url=url, timeout=60) as client:
        form = client.get("/console/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        signed = client.post("/console/login", data={"csrf_token": token.group(1), "name": name, "password": password})
        assert signed.status_code == 303
        assert device_id in client.get("/console/fleet?q=" + device_id).text
        assert client.get(f"/console/devices/{device_id}").status_code == 200
