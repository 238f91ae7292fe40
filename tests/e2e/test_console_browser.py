"""The analyst console in a real browser: Debian's headless chromium driven through chromium-driver
(Selenium), against a real collector holding a simulated company (farmwatch-simulate, shifted to now).

One legitimate employee has moved from San Francisco to Boston... on paper only: the roster says
Boston while the laptop's anchors put it on the west coast, so location_proof flags it a farm, the
false positive an analyst marks in test_marking_a_false_positive_clears_the_farm_and_resolves_its_alert.
Screenshots are saved under pytest's tmp folder (the path is printed) as artifacts to look at.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from collector_process import RunningCollector, launch_collector

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (deploy/dev/system-packages.txt)"),
]
if CHROMIUM and CHROMEDRIVER:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "dev"))
from demo import load_fleet  # noqa: E402  (deploy/dev/demo.py: what `make demo` loads)

from farmwatch.collector.console.accounts import Accounts  # noqa: E402
from farmwatch.collector.storage import Storage  # noqa: E402
from farmwatch.simulator.cli import write_fleet  # noqa: E402

PASSWORD = "a long analyst password"
MOVED_TO = {"city": "Boston", "latitude": "42.36", "longitude": "-71.06", "timezone": "America/New_York"}


@dataclass
class Company:
    collector: RunningCollector
    relocated: str  # the legitimate device whose roster city is wrong
    alerts: Path  # the ECS file output's alerts (min_verdict farm)
    shots: Path  # screenshots (test artifacts)

    def verdicts(self) -> dict[str, str]:
        listed = httpx.get(f"{self.collector.url}/api/v1/devices", timeout=300,
                           headers={"Authorization": f"Bearer {self.collector.analyst_token}"}).json()
        return {row["device_id"]: row["verdict"] for row in listed}


def _relocate_one(fleet: Path) -> str:
    """Give one legitimate west-coast employee a Boston roster entry; returns their device id."""
    labels = {row["device_id"]: row["label"] for row in csv.DictReader((fleet / "labels.csv").open())}
    rows = list(csv.DictReader((fleet / "roster.csv").open()))
    moved = next(row for row in rows if labels[row["device_id"]] == "legit"
                 and row["city"] in ("San Francisco", "Seattle", "Portland", "Los Angeles"))
    moved.update(MOVED_TO)
    with (fleet / "roster.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return moved["device_id"]


@pytest.fixture(scope="module")
def company(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Company]:
    folder = tmp_path_factory.mktemp("console-company")
    write_fleet(folder / "fleet", seed=7, legit=12, farms=10, days=2)  # farms=10: one shares a room
    relocated = _relocate_one(folder / "fleet")
    alerts = folder / "alerts.ndjson"
    config = ("[detection]\ninterval_seconds = 3600\nrefresh_wait_seconds = 300\n\n"
              f'[[outputs]]\ntype = "ecs_file"\nurl = "{alerts}"\nmin_verdict = "farm"\n')
    running = launch_collector(folder / "collector", config)
    try:
        storage = Storage.open(running.db_url)
        try:
            load_fleet(storage, folder / "fleet", datetime.now(timezone.utc))
            Accounts(storage.engine).add("alice", PASSWORD, datetime.now(timezone.utc))
        finally:
            storage.close()
        shots = tmp_path_factory.mktemp("console-screenshots")
        print(f"\nconsole screenshots: {shots}")
        made = Company(running, relocated, alerts, shots)
        assert made.verdicts()[relocated] == "farm"  # scores the fleet (waits for the run)
        yield made
    finally:
        running.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(browser: WebDriver, company: Company, password: str = PASSWORD) -> None:
    browser.get(f"{company.collector.url}/console/fleet")
    assert browser.current_url.startswith(f"{company.collector.url}/console/login")
    browser.find_element(By.NAME, "name").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "section.signin button").click()
    _settled(browser, "header .who, p.refusal")


def _settled(browser: WebDriver, selector: str) -> None:
    """Wait until the page a click led to shows ``selector`` (a click returns before the next page loads)."""
    WebDriverWait(browser, 60).until(lambda driver: driver.find_elements(By.CSS_SELECTOR, selector))


def _fleet_rows(browser: WebDriver) -> list[tuple[str, str]]:
    """(device id, verdict) of every row on the fleet page, in page order."""
    rows = []
    for row in browser.find_elements(By.CSS_SELECTOR, "table.fleet tbody tr"):
        device = row.find_element(By.CSS_SELECTOR, "a[href^='/console/devices/']").text
        rows.append((device, row.find_element(By.CSS_SELECTOR, "span.pill").text))
    return rows


def _full_page_shot(browser: WebDriver, path: Path) -> None:
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, height + 40)
    assert browser.save_screenshot(str(path))


def test_sign_in_then_the_fleet_lists_farms_first(browser: WebDriver, company: Company) -> None:
    _sign_in(browser, company)
    assert browser.current_url == f"{company.collector.url}/console/fleet"
    assert "alice" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert "farmwatch_session" not in browser.execute_script("return document.cookie")  # HttpOnly
    expected = company.verdicts()
    farms = sorted(device for device, verdict in expected.items() if verdict == "farm")
    assert len(farms) >= 6
    rows = _fleet_rows(browser)
    order = {"farm": 0, "review": 1, "clear": 2}
    assert [order[verdict] for _, verdict in rows] == sorted(order[verdict] for _, verdict in rows)
    assert sorted(device for device, verdict in rows[:len(farms)]) == farms
    assert all(expected[device] == verdict for device, verdict in rows)
    _full_page_shot(browser, company.shots / "fleet.png")

    browser.find_element(By.CSS_SELECTOR, "a.pill.farm").click()  # the farm count links to the farm list
    WebDriverWait(browser, 60).until(lambda driver: driver.current_url.endswith("?verdict=farm"))
    assert sorted(device for device, _ in _fleet_rows(browser)) == farms


def test_device_page_shows_the_heatmap_and_the_distance_chart(browser: WebDriver, company: Company) -> None:
    _sign_in(browser, company)
    browser.get(f"{company.collector.url}/console/devices/{company.relocated}")
    heatmaps = browser.find_elements(By.CSS_SELECTOR, "figure.heatmap svg")
    assert heatmaps and "America/New_York" in browser.find_element(By.CSS_SELECTOR, "figure.heatmap figcaption").text
    cells = heatmaps[0].find_elements(By.CSS_SELECTOR, "rect.cell")
    assert len(cells) % 24 == 0 and len(cells) >= 48
    assert heatmaps[0].size["width"] > 300
    # The laptop answers a west-coast anchor faster than light allows from Boston.
    distance = browser.find_element(By.CSS_SELECTOR, "figure.distance svg")
    assert distance.find_elements(By.CSS_SELECTOR, "circle.dot.bad")
    assert "impossible from Boston" in distance.text
    assert distance.size["width"] > 500
    _full_page_shot(browser, company.shots / "device.png")
    heatmaps[0].screenshot(str(company.shots / "heatmap.png"))
    distance.screenshot(str(company.shots / "distance.png"))

    # Printed for a case file: navigation and forms are left out, the charts stay.
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert not browser.find_element(By.CSS_SELECTOR, "header.top").is_displayed()
    assert not browser.find_element(By.CSS_SELECTOR, "div.forms").is_displayed()
    assert browser.find_element(By.CSS_SELECTOR, "figure.distance").is_displayed()


def test_the_cluster_page_shows_who_shares_a_network_and_for_how_long(browser: WebDriver, company: Company) -> None:
    _sign_in(browser, company)
    browser.get(f"{company.collector.url}/console/fleet?detector=colocation&verdict=farm")
    link = browser.find_element(By.CSS_SELECTOR, "table.fleet a[href^='/console/clusters/']")
    link.click()
    _settled(browser, "table.members")
    members = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.members tbody td:first-child")]
    employees = {cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "table.members tbody td:nth-child(2)")}
    assert len(members) >= 2 and len(employees) == len(members)
    shared = browser.find_elements(By.CSS_SELECTOR, "table.shared tbody tr")
    assert shared and int(shared[0].find_element(By.CSS_SELECTOR, "td.num").text) >= 4  # hours together
    _full_page_shot(browser, company.shots / "cluster.png")

    # Each member's device page links back to its cluster and names the others.
    browser.get(f"{company.collector.url}/console/devices/{members[0]}")
    networks = browser.find_element(By.CSS_SELECTOR, "section#networks").text
    assert all(other in networks for other in members[1:]) and "see the co-location cluster" in networks


def test_marking_a_false_positive_clears_the_farm_and_resolves_its_alert(browser: WebDriver, company: Company) -> None:
    device = company.relocated
    raised = _alerts_for(company.alerts, device, "verdict-raised")
    assert raised, "the farm verdict raised no alert"
    _sign_in(browser, company)
    browser.get(f"{company.collector.url}/console/devices/{device}")
    assert browser.find_element(By.CSS_SELECTOR, "p.verdict .pill").text == "farm"
    form = browser.find_element(By.CSS_SELECTOR, "form[action$='/suppress']")
    Select(form.find_element(By.NAME, "detector")).select_by_visible_text("location_proof")
    days = form.find_element(By.NAME, "days")
    days.clear()
    days.send_keys("14")
    form.find_element(By.NAME, "reason").send_keys("Moved to San Francisco in May; HR roster not updated yet")
    form.find_element(By.CSS_SELECTOR, "button").click()
    _settled(browser, "div.suppressed")

    assert browser.find_element(By.CSS_SELECTOR, "p.verdict .pill").text != "farm"
    assert "HR roster not updated" in browser.find_element(By.CSS_SELECTOR, "div.suppressed").text
    _full_page_shot(browser, company.shots / "device-suppressed.png")
    browser.get(f"{company.collector.url}/console/fleet?verdict=farm")
    assert device not in [listed for listed, _ in _fleet_rows(browser)]
    assert company.verdicts()[device] != "farm"

    audit = subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "audit", "list", "--device", device,
                            "--db", company.collector.db_url], capture_output=True, text=True, timeout=60).stdout
    action = next(line.split("\t") for line in audit.splitlines() if line.split("\t")[2] == "suppress")
    assert action[1] == "alice" and "location_proof" in action[4] and "HR roster" in action[4]

    deadline = time.monotonic() + 60
    while not _alerts_for(company.alerts, device, "verdict-resolved") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _alerts_for(company.alerts, device, "verdict-resolved"), "the suppression did not resolve the alert"


def test_a_wrong_password_and_a_missing_csrf_token_are_refused(browser: WebDriver, company: Company) -> None:
    _sign_in(browser, company, password="not the password")
    assert "/console/login" in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, "p.refusal").text == "Wrong name or password."
    browser.delete_all_cookies()

    _sign_in(browser, company)
    device = company.relocated
    browser.get(f"{company.collector.url}/console/devices/{device}")
    form = browser.find_element(By.CSS_SELECTOR, "form[action$='/note']")
    browser.execute_script("arguments[0].querySelector('input[name=csrf_token]').remove()", form)
    form.find_element(By.NAME, "text").send_keys("this note must not be stored")
    form.find_element(By.CSS_SELECTOR, "button").click()
    _settled(browser, "p.refusal")
    assert "csrf_token: missing or wrong" in browser.find_element(By.CSS_SELECTOR, "p.refusal").text
    with sqlite3.connect(company.collector.db_path) as db:
        assert db.execute("SELECT count(*) FROM notes WHERE text LIKE 'this note%'").fetchone() == (0,)


def _alerts_for(path: Path, device: str, action: str) -> list[dict[str, object]]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        document = json.loads(line)
        if device in line and document["event"]["action"] == action:
            found.append(document)
    return found
