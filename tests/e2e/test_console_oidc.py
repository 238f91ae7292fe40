"""Console sign-in through a real OpenID Provider: panva's certified ``oidc-provider`` run by node
(tests/fixtures/oidc_provider.py installs it from the npm registry with ``npm ci``), a real
collector configured with ``[console.oidc]``, and Debian's headless chromium signing in on the
provider's own login page. Who may sign in is the collector's mapping: alice maps to an analyst
account; mallory is unknown to the mapping, bob maps to an account nobody made, erin's address is
unverified. Every attempt lands in ``farmwatch-collector audit list``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import oidc_provider
import pytest
from collector_process import RunningCollector, free_port
from oidc_provider import OidcProvider
from test_console_browser import CHROMEDRIVER, CHROMIUM, PASSWORD, browser  # noqa: F401  (fixture by name)

from farmwatch.collector.console.accounts import Accounts
from farmwatch.collector.storage import Storage

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(oidc_provider.unavailable_reason() is not None, reason=str(oidc_provider.unavailable_reason())),
]
needs_browser = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                   reason="needs Debian's chromium and chromium-driver (deploy/dev/system-packages.txt)")
if CHROMIUM and CHROMEDRIVER:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

ACCOUNTS = {  # the provider's people: login name -> the claims it vouches for
    "alice": {"email": "alice@example.test", "email_verified": True},
    "mallory": {"email": "mallory@example.test", "email_verified": True},
    "bob": {"email": "bob@example.test", "email_verified": True},
    "erin": {"email": "erin@example.test", "email_verified": False},
}
MAPPING = '"alice@example.test" = "alice"\n"bob@example.test" = "bob"\n"erin@example.test" = "erin"\n'


@dataclass
class Setup:
    provider: OidcProvider
    collector: RunningCollector

    def audit(self) -> str:
        done = self.collector.cli("audit", "list", "--db", self.collector.db_url)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = oidc_provider.install(tmp_path_factory.mktemp("oidc-provider"))
    port = free_port()
    provider = OidcProvider(folder, f"http://127.0.0.1:{port}/console/oidc/callback", ACCOUNTS).start()
    workdir = tmp_path_factory.mktemp("oidc-collector")
    secret = workdir / "oidc-client-secret"
    secret.write_text(provider.client_secret + "\n")
    config = (f'[collector]\npublic_url = "http://127.0.0.1:{port}"\n\n[detection]\ninterval_seconds = 3600\n\n'
              f'[console.oidc]\nissuer = "{provider.issuer}"\nclient_id = "{provider.client_id}"\n'
              f'client_secret_file = "{secret}"\n\n[console.oidc.analysts]\n{MAPPING}')
    collector = RunningCollector(workdir=workdir / "collector", port=port, config_text=config)
    try:
        collector.start()
        storage = Storage.open(collector.db_url)
        try:
            for name in ("alice", "erin"):  # bob is mapped but has no account
                Accounts(storage.engine).add(name, PASSWORD, datetime.now(timezone.utc))
        finally:
            storage.close()
        yield Setup(provider, collector)
    finally:
        collector.stop()
        provider.stop()


def _through_the_provider(browser: WebDriver, setup: Setup, login: str) -> None:  # noqa: F811
    """From the console's sign-in page, through the provider's login form, to wherever it leads."""
    browser.delete_all_cookies()
    browser.get(f"{setup.collector.url}/console/fleet")
    browser.find_element(By.LINK_TEXT, "Sign in with your company account").click()
    WebDriverWait(browser, 60).until(lambda driver: driver.current_url.startswith(setup.provider.issuer))
    browser.find_element(By.NAME, "login").send_keys(login)
    browser.find_element(By.NAME, "password").send_keys("whatever the provider checks")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda driver: driver.current_url.startswith(setup.collector.url)
                                     and driver.find_elements(By.CSS_SELECTOR, "header .who, p.refusal, main"))


@needs_browser
def test_a_mapped_analyst_signs_in_at_the_provider_and_lands_on_the_fleet(
        browser: WebDriver, setup: Setup) -> None:  # noqa: F811
    _through_the_provider(browser, setup, "alice")
    assert browser.current_url == f"{setup.collector.url}/console/fleet"
    assert "alice" in browser.find_element(By.CSS_SELECTOR, "header .who").text
    assert "farmwatch_session" not in browser.execute_script("return document.cookie")  # HttpOnly
    names = {cookie["name"] for cookie in browser.get_cookies()}
    assert "farmwatch_session" in names and "farmwatch_oidc" not in names  # the attempt's cookie is spent
    signed = [line for line in setup.audit().splitlines() if "alice@example.test (sub alice)" in line]
    assert signed and "sign_in" in signed[0] and "sign_in_refused" not in signed[0]


@needs_browser
@pytest.mark.parametrize(("login", "why"), [
    pytest.param("mallory", "mallory@example.test is not mapped to an analyst", id="not-mapped"),
    pytest.param("bob", "bob@example.test maps to analyst 'bob', who has no account", id="no-account"),
    pytest.param("erin", "has not verified the email address erin@example.test", id="unverified-email"),
])
def test_a_person_the_console_does_not_map_is_refused_and_audited(
        browser: WebDriver, setup: Setup, login: str, why: str) -> None:  # noqa: F811
    _through_the_provider(browser, setup, login)
    assert browser.find_elements(By.CSS_SELECTOR, "header .who") == []  # no session
    assert why in browser.page_source
    assert "farmwatch_session" not in {cookie["name"] for cookie in browser.get_cookies()}
    refusals = [line for line in setup.audit().splitlines() if "sign_in_refused" in line and why in line]
    assert refusals and f"{login}@example.test" in refusals[0]


def test_the_redirect_carries_pkce_state_and_nonce_and_a_forged_answer_is_refused(setup: Setup) -> None:
    with httpx.Client(base_url=setup.collector.url, timeout=30) as client:
        started = client.get("/console/oidc/start", params={"next": "/console/onboarding"})
        assert started.status_code == 303 and "farmwatch_oidc" in client.cookies
        target = urlsplit(started.headers["location"])
        asked = {key: values[0] for key, values in parse_qs(target.query).items()}
        assert f"{target.scheme}://{target.netloc}" == setup.provider.issuer
        assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) >= 43
        assert asked["state"] and asked["nonce"] and asked["client_id"] == setup.provider.client_id
        assert asked["redirect_uri"] == f"{setup.collector.url}/console/oidc/callback"
        assert "openid" in asked["scope"].split()

        forged = client.get("/console/oidc/callback", params={"code": "stolen", "state": "not-the-one"})
        assert forged.status_code == 400 and "state: does not match" in forged.text
    with httpx.Client(base_url=setup.collector.url, timeout=30) as stranger:  # no attempt started here
        cold = stranger.get("/console/oidc/callback", params={"code": "x", "state": asked["state"]})
        assert cold.status_code == 400 and "was not started here" in cold.text
    assert "state: does not match" in setup.audit()


def test_the_sign_in_page_offers_the_provider(setup: Setup) -> None:
    page = httpx.get(f"{setup.collector.url}/console/login", timeout=30)
    assert "Sign in with your company account" in page.text and setup.provider.issuer in page.text



def test_a_provider_that_does_not_answer_is_a_clear_502(collector_factory: Callable[..., RunningCollector],
                                                         tmp_path: Path) -> None:
    (tmp_path / "oidc-secret").write_text("a client secret")
    silent = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    collector = collector_factory(
        f'[collector]\npublic_url = "http://127.0.0.1:8080"\n\n[console.oidc]\nissuer = "{silent}"\n'
        f'client_id = "farmwatch-console"\nclient_secret_file = "{tmp_path / "oidc-secret"}"\n'
        '[console.oidc.analysts]\n"alice@example.test" = "alice"\n')
    answer = httpx.get(f"{collector.url}/console/oidc/start", timeout=30)
    assert answer.status_code == 502 and f"The sign-in provider {silent} could not be reached" in answer.text
    assert httpx.get(f"{collector.url}/healthz", timeout=30).status_code == 200
