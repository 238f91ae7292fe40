"""The analyst console over real HTTP against a real collector process: accounts, sessions, CSRF,
the audit log, suppressions honoured by scoring, onboarding records, and refusals naming the field."""

from __future__ import annotations

import re
import shutil
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from collector_helpers import auth, report_for
from certificates import self_signed
from collector_process import RunningCollector, die_with_parent, free_port
from console_helpers import PASSWORD, add_analyst, csrf_of, signed_in

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "farmwatch.collector.cli"]


def _cli(collector: RunningCollector, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args, "--db", collector.db_url], input=stdin, capture_output=True, text=True, timeout=60)


def test_analyst_accounts_are_argon2id_and_managed_by_the_cli(collector: RunningCollector, tmp_path: Path) -> None:
    add_analyst(collector, "alice")
    secret = tmp_path / "pw"
    secret.write_text("another long password\n")
    assert _cli(collector, "analysts", "add", "bob", "--password-file", str(secret)).returncode == 0
    again = _cli(collector, "analysts", "add", "bob", "--password-file", str(secret))
    assert again.returncode == 1 and again.stderr.strip() == "farmwatch-collector: analyst 'bob' already exists"
    short = _cli(collector, "analysts", "add", "carol", stdin="short\n")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    listed = _cli(collector, "analysts", "list").stdout.splitlines()
    assert [line.split("\t")[0] for line in listed] == ["alice", "bob"]
    with sqlite3.connect(collector.db_path) as db:
        hashes = dict(db.execute("SELECT name, password_hash FROM analysts"))
    assert all(value.startswith("$argon2id$") for value in hashes.values())
    assert PASSWORD not in hashes["alice"]

    client, csrf = signed_in(collector, "bob", "another long password")
    assert _cli(collector, "analysts", "remove", "bob").returncode == 0
    # Removing an analyst ends their sessions at once.
    assert client.get("/console/fleet").status_code == 303
    assert _cli(collector, "analysts", "remove", "bob").stderr.strip() == "farmwatch-collector: no analyst named 'bob'"


def test_sign_in_sets_a_safe_cookie_and_refuses_wrong_passwords(collector: RunningCollector) -> None:
    add_analyst(collector)
    client = httpx.Client(base_url=collector.url)
    assert client.get("/console/fleet").headers["location"] == "/console/login?next=%2Fconsole%2Ffleet"
    form = client.get("/console/login")
    assert "default-src 'self'" in form.headers["content-security-policy"]
    token = csrf_of(form.text)
    wrong = client.post("/console/login", data={"csrf_token": token, "name": "alice", "password": "not it at all"})
    assert wrong.status_code == 401 and "Wrong name or password." in wrong.text
    assert "farmwatch_session" not in client.cookies
    nobody = client.post("/console/login", data={"csrf_token": token, "name": "mallory", "password": PASSWORD})
    assert nobody.status_code == 401
    no_csrf = client.post("/console/login", data={"name": "alice", "password": PASSWORD})
    assert no_csrf.status_code == 403 and "csrf_token" in no_csrf.text
    right = client.post("/console/login", data={"csrf_token": token, "name": "alice", "password": PASSWORD,
                                                "next": "//evil.example/"})
    assert right.status_code == 303 and right.headers["location"] == "/console/fleet"
    cookie = next(value for key, value in right.headers.multi_items()
                  if key == "set-cookie" and value.startswith("farmwatch_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; under TLS the flag is set (test below)
    audit = _cli(collector, "audit", "list").stdout.splitlines()
    assert [line.split("\t")[1:3] for line in audit] == [["alice", "sign_in"], ["mallory", "sign_in_refused"],
                                                         ["alice", "sign_in_refused"]]


def test_every_post_needs_the_session_csrf_token(collector: RunningCollector) -> None:
    add_analyst(collector)
    device = collector.enrol()
    device_id = str(device["device_id"])
    client, csrf = signed_in(collector)
    note = f"/console/devices/{device_id}/note"
    assert client.post(note, data={"text": "no token"}).status_code == 403
    assert client.post(note, data={"text": "wrong token", "csrf_token": csrf + "x"}).status_code == 403
    assert client.post(note, json={"text": "json", "csrf_token": csrf}).status_code == 415
    assert client.post(note, data={"text": "", "csrf_token": csrf}).status_code == 422
    assert client.post(note, data={"text": "called the employee", "csrf_token": csrf}).status_code == 303
    with sqlite3.connect(collector.db_path) as db:
        assert db.execute("SELECT analyst, text FROM notes").fetchall() == [("alice", "called the employee")]
    # A session's token is no good for another session.
    other, other_csrf = signed_in(collector)
    assert other_csrf != csrf
    assert other.post(note, data={"text": "borrowed", "csrf_token": csrf}).status_code == 403


def test_fleet_filters_are_checked_by_name(collector: RunningCollector) -> None:
    add_analyst(collector)
    client, _ = signed_in(collector)
    for query, field in (("verdict=maybe", "verdict"), ("detector=nope", "detector"), ("network=wifi", "network"),
                         ("silent_days=-1", "silent_days"), ("page=x", "page"), ("q=" + "a" * 200, "q")):
        answer = client.get(f"/console/fleet?{query}")
        assert answer.status_code == 422 and f"{field}:" in answer.text, query
    assert client.get("/console/devices/dev-nope").status_code == 404


def test_a_suppression_is_honoured_by_scoring_shown_and_audited(collector: RunningCollector) -> None:
    add_analyst(collector)
    device = collector.enrol(hostname="tp-helpdesk")
    device_id = str(device["device_id"])
    assert httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device_id, 1),
                      headers=auth(device["token"])).status_code == 202
    analyst = auth(collector.analyst_token)
    before = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst, timeout=120).json()
    assert any(f["detector"] == "remote_access" for f in before["findings"])

    client, csrf = signed_in(collector)
    page = client.get(f"/console/devices/{device_id}")
    assert page.status_code == 200 and "remote_access" in page.text
    refused = client.post(f"/console/devices/{device_id}/suppress",
                          data={"csrf_token": csrf, "detector": "remote_access", "reason": "ok", "days": "30"})
    assert refused.status_code == 422 and "reason:" in refused.text
    too_long = client.post(f"/console/devices/{device_id}/suppress",
                           data={"csrf_token": csrf, "detector": "remote_access", "reason": "approved", "days": "400"})
    assert too_long.status_code == 422 and "days:" in too_long.text
    done = client.post(f"/console/devices/{device_id}/suppress", data={
        "csrf_token": csrf, "detector": "remote_access", "reason": "IT's own RustDesk, ticket 4411", "days": "30"})
    assert done.status_code == 303

    after = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst, timeout=120).json()
    assert not any(f["detector"] == "remote_access" for f in after["findings"])
    assert after["risk"] <= before["risk"]
    shown = client.get(f"/console/devices/{device_id}").text
    assert "Suppressed as false positive" in shown and "ticket 4411" in shown
    audit = _cli(collector, "audit", "list", "--device", device_id).stdout
    assert re.search(r"\talice\tsuppress\t" + device_id + r"\t.*remote_access.*ticket 4411", audit)
    assert "\talice\tview_device\t" + device_id in audit

    assert client.post(f"/console/devices/{device_id}/acknowledge", data={"csrf_token": csrf}).status_code == 303
    acknowledged = client.get(f"/console/devices/{device_id}").text
    assert re.search(r"Acknowledged</h3><ul><li>\w+ at risk [0-9.]+ by alice", acknowledged)
    assert "\talice\tacknowledge\t" + device_id in _cli(collector, "audit", "list", "--analyst", "alice").stdout

    (suppression,) = re.findall(r'name="suppression_id" value="(\d+)"', shown)
    assert client.post(f"/console/devices/{device_id}/lift",
                       data={"csrf_token": csrf, "suppression_id": suppression}).status_code == 303
    lifted = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst, timeout=120).json()
    assert any(f["detector"] == "remote_access" for f in lifted["findings"])
    assert "lift_suppression" in _cli(collector, "audit", "list").stdout


def test_verify_answers_are_listed_on_the_onboarding_page(collector: RunningCollector) -> None:
    add_analyst(collector)
    device = collector.enrol(hostname="lt-new-hire")
    device_id = str(device["device_id"])
    assert httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device_id, 1),
                      headers=auth(device["token"])).status_code == 202
    answered = httpx.post(f"{collector.url}/api/v1/verify", json={"seconds": 60}, headers=auth(device["token"]),
                          timeout=120)
    assert answered.status_code == 200
    client, _ = signed_in(collector)
    listing = client.get("/console/onboarding").text
    assert "lt-new-hire" in listing and device_id in listing and "60 s" in listing
    (record,) = re.findall(r'href="/console/onboarding/(\d+)"', listing)
    printable = client.get(f"/console/onboarding/{record}").text
    assert f"lt-new-hire ({device_id})" in printable and answered.json()["verdict"] in printable
    assert "What to do next" in printable


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_the_session_cookie_is_secure_under_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    (tmp_path / "secret").write_text("s" * 32)
    port, db = free_port(), f"sqlite:///{tmp_path / 'farmwatch.db'}"
    with open(tmp_path / "collector.log", "wb") as log:
        server = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), "--db", db, "--enroll-secret-file", str(tmp_path / "secret"),
             "--analyst-token-file", str(tmp_path / "secret"), "--tls-cert-file", str(cert), "--tls-key-file", str(key)],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert)))
    try:
        for _ in range(300):
            try:
                if client.get("/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail((tmp_path / "collector.log").read_text())
        added = subprocess.run([*CLI, "analysts", "add", "alice", "--db", db], input=PASSWORD, capture_output=True,
                               text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        form = client.get("/console/login")
        assert "Secure" in form.headers["set-cookie"]
        answer = client.post("/console/login", data={"csrf_token": csrf_of(form.text), "name": "alice",
                                                     "password": PASSWORD})
        assert answer.status_code == 303
        assert "Secure" in answer.headers["set-cookie"] and "HttpOnly" in answer.headers["set-cookie"]
    finally:
        client.close()  # an open keep-alive connection would hold up the graceful shutdown
        server.terminate()
        server.wait(timeout=30)


def test_odd_input_gets_a_4xx_never_a_5xx(collector: RunningCollector) -> None:
    add_analyst(collector)
    device_id = str(collector.enrol()["device_id"])
    client, csrf = signed_in(collector)
    for path in ("/console/devices/" + "x" * 300, "/console/devices/a%00b", "/console/clusters/a%00b",
                 "/console/onboarding/99999999999999999999999", "/console/onboarding/x", "/console/fleet?q=a%00b",
                 "/console/fleet?silent_days=99999999999999999999"):
        answer = client.get(path)
        assert 400 <= answer.status_code < 500, (path, answer.status_code)
    for form in ({"text": "a\x00b"}, {"te\x00xt": "x"}):
        answer = client.post(f"/console/devices/{device_id}/note", data={**form, "csrf_token": csrf})
        assert answer.status_code == 422 and "NUL" in answer.text
    answer = client.post("/console/devices/a%00b/note", data={"text": "x", "csrf_token": csrf})
    assert answer.status_code == 404
    big = client.post(f"/console/devices/{device_id}/note", content=b"text=" + b"a" * 70_000 + b"&csrf_token=" + csrf.encode(),
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413


def test_wrong_passwords_from_one_address_are_throttled(collector_factory) -> None:  # type: ignore[no-untyped-def]
    collector = collector_factory(config_text="[limits]\nfailed_auth_per_address_per_minute = 2\n")
    add_analyst(collector)
    client = httpx.Client(base_url=collector.url)
    token = csrf_of(client.get("/console/login").text)
    for _ in range(2):
        assert client.post("/console/login", data={"csrf_token": token, "name": "alice",
                                                   "password": "guess guess guess"}).status_code == 401
    throttled = client.post("/console/login", data={"csrf_token": token, "name": "alice", "password": PASSWORD})
    assert throttled.status_code == 429 and "Too many failed sign-ins from 127.0.0.1" in throttled.text
