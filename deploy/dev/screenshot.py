"""Regenerate the README's picture of the console: ``docs/console-device.png``.

Starts ``make demo``'s simulated company (deploy/dev/demo.py) on a free port, signs in with headless
chromium (Debian's ``chromium`` and ``chromium-driver``), opens the highest-risk farm laptop whose
findings include a remote-access session and writes the top of its device page, from the verdict
down to the remote-access timeline, as a PNG. Nothing in the picture is hand-edited.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import DEMO_ANALYST, prepare, serve, stop  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "docs" / "console-device.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/dev/screenshot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default: {OUT})")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="farmwatch-screenshot-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        db_url, password = prepare(folder, seed=7, legit=60, farms=16, days=3)
        collector = serve(folder, db_url, port)
        try:
            url = f"http://127.0.0.1:{port}"
            token = (folder / "analyst-token").read_text().strip()
            # Ask for the verdicts through the API: it waits for the first scoring run.
            listed = httpx.get(f"{url}/api/v1/devices", headers={"Authorization": f"Bearer {token}"}, timeout=600).json()
            assert any(row["verdict"] == "farm" for row in listed), "the simulated company has no farm"
            _shoot(url, password, args.out)
        finally:
            stop(collector)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


def _shoot(url: str, password: str, out: Path) -> None:
    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1000"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    try:
        browser.get(f"{url}/console/login")
        browser.find_element(By.NAME, "name").send_keys(DEMO_ANALYST)
        browser.find_element(By.NAME, "password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "section.signin button").click()
        WebDriverWait(browser, 60).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "table.fleet"))
        browser.get(f"{url}/console/fleet?verdict=farm&detector=session_distance")
        browser.find_element(By.CSS_SELECTOR, "table.fleet a[href^='/console/devices/']").click()
        WebDriverWait(browser, 60).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "section#remote"))
        time.sleep(0.5)  # let layout settle before measuring
        bottom = browser.execute_script("const r = document.querySelector('#remote').getBoundingClientRect();"
                                        "return r.bottom + window.scrollY + 12;")
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1200, "height": bottom, "scale": 0.8}})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.quit()


if __name__ == "__main__":
    raise SystemExit(main())
