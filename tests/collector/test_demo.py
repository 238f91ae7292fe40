"""`make demo` (deploy/dev/demo.py): a real collector on a throwaway database holding a simulated
company; the console it prints signs in, shows the simulated banner and lists farms first; Ctrl-C
stops it and deletes the database."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from collector_process import free_port
from console_helpers import csrf_of

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parents[2] / "deploy" / "dev" / "demo.py"


def test_demo_shows_simulated_farms_in_the_console(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    started = time.monotonic()
    with open(out, "wb") as sink:
        demo = subprocess.Popen([sys.executable, str(DEMO), "--port", str(free_port())], stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        found = None
        while found is None and demo.poll() is None and time.monotonic() - started < 300:
            found = re.search(r"console\s+(http://127\.0\.0\.1:\d+)/console/\s+sign in\s+name (\S+)\s+password (\S+)",
                              out.read_text())
            time.sleep(0.5)
        assert found, out.read_text()
        url, name, password = found.groups()
        folder = re.search(r"deletes (\S+)\)", out.read_text())
        assert folder and Path(folder.group(1)).is_dir()
        with httpx.Client(base_url=url, timeout=60) as client:
            form = client.get("/console/login")
            assert client.post("/console/login", data={"csrf_token": csrf_of(form.text), "name": name,
                                                       "password": password}).status_code == 303
            # Scoring stores its verdicts batch by batch: wait for the farms, not for the first one.
            page = client.get("/console/fleet").text
            while page.count("pill farm\">farm<") < 10 and time.monotonic() - started < 300:
                time.sleep(1)
                page = client.get("/console/fleet").text
        print(f"make demo: farms on the fleet page {time.monotonic() - started:.0f} s after start")
        assert "Simulated company" in page
        verdicts = re.findall(r'<span class="pill (farm|review|clear)">', page)
        assert verdicts[0] == "farm" and verdicts.count("farm") >= 10

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 0
        assert not Path(folder.group(1)).exists()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
