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
import psutil
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
        if demo.poll() is None:  # a failed assertion: let the demo stop its collector, as Ctrl-C does
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()


STARTER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {dev!r})
import demo
from farmwatch.collector.storage import Storage
folder, port = Path(sys.argv[1]), int(sys.argv[2])
url = f"sqlite:///{{folder / 'demo.db'}}"
Storage.open(url).close()
print(demo.serve(folder, url, port).pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the collector follows its parent by Linux's PR_SET_PDEATHSIG")
def test_a_demo_killed_outright_takes_its_collector_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves the demo no chance to stop its collector (its own session, so Ctrl-C reaches only
    the demo): the kernel stops it instead. Before, such a collector kept running."""
    starter = subprocess.Popen([sys.executable, "-c", STARTER.format(dev=str(DEMO.parent)), str(tmp_path),
                                str(free_port())], stdout=subprocess.PIPE)
    try:
        assert starter.stdout is not None
        collector = psutil.Process(int(starter.stdout.readline()))
        assert collector.is_running() and "serve" in collector.cmdline()
    finally:
        starter.kill()
        starter.wait()
    began = time.monotonic()
    try:
        collector.wait(timeout=60)
    except psutil.TimeoutExpired:
        collector.kill()
        pytest.fail("the collector outlived the demo killed outright")
    print(f"the collector stopped {time.monotonic() - began:.1f} s after the demo was killed")
