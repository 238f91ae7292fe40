"""Alerts reach real receivers: rsyslog (TCP octet-counted, TLS with client certificates from a
throwaway CA, UDP) writing to files, an HTTP server for Splunk HEC, ECS, OCSF and the signed
webhook, and files for Filebeat-style shippers. A laptop whose reports show an inbound AnyDesk
session from far away and a PiKVM produces exactly one alert in each, and re-scoring sends nothing.

Everything is real and started here: the collector process (tests/fixtures/collector_process.py),
rsyslogd, the HTTP server (tests/fixtures/siem_receivers.py); the report is hand-written.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alert_scenario import PUBLIC_URL, collector_config, enrol_with_roster, report_and_score
from collector_process import CLI, RunningCollector
from siem_receivers import HttpReceiver, Rsyslog, rsyslog_unavailable, wait_for
from throwaway_ca import SERVER_NAME, Pki, make_pki

pytestmark = [pytest.mark.slow]


@dataclass
class Receivers:
    folder: Path
    pki: Pki
    rsyslog: Rsyslog
    http: HttpReceiver
    hec_token_file: Path
    webhook_secret_file: Path

    def outputs_toml(self, only: tuple[str, ...] = ()) -> str:
        tables = {
            "siem-tcp": f'type = "syslog"\nformat = "cef"\nurl = "tcp://127.0.0.1:{self.rsyslog.tcp_port}"',
            "siem-tls": (f'type = "syslog"\nformat = "json"\nurl = "tls://127.0.0.1:{self.rsyslog.tls_port}"\n'
                         f'ca_file = "{self.pki.ca}"\ncert_file = "{self.pki.client_cert}"\n'
                         f'key_file = "{self.pki.client_key}"\nserver_name = "{SERVER_NAME}"'),
            "siem-udp": f'type = "syslog"\nurl = "udp://127.0.0.1:{self.rsyslog.udp_port}"',
            "splunk": (f'type = "splunk_hec"\nurl = "{self.http.url}/hec"\ntoken_file = "{self.hec_token_file}"\n'
                       'sourcetype = "farmwatch:alert"\nindex = "security"'),
            "elastic": f'type = "ecs_http"\nurl = "{self.http.url}/ecs"',
            "filebeat": f'type = "ecs_file"\nurl = "{self.folder / "ecs.ndjson"}"\nmax_bytes = 1048576\nbackups = 2',
            "lake": f'type = "ocsf"\nurl = "{self.http.url}/ocsf"',
            "lake-file": f'type = "ocsf"\nurl = "{self.folder / "ocsf.ndjson"}"',
            "soar": (f'type = "webhook"\nurl = "{self.http.url}/webhook"\nsecret_file = "{self.webhook_secret_file}"\n'
                     "retry_max_seconds = 1"),
        }
        return "".join(f'\n[[outputs]]\nname = "{name}"\n{table}\n' for name, table in tables.items()
                       if not only or name in only)


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Receivers]:
    reason = rsyslog_unavailable()
    if reason:
        pytest.skip(reason)
    folder = tmp_path / "receivers"
    pki = make_pki(folder / "pki")
    hec_token, secret = secrets.token_hex(16), secrets.token_hex(32)
    (folder / "hec-token").write_text(hec_token + "\n")
    (folder / "webhook-secret").write_text(secret + "\n")
    http = HttpReceiver(hec_token=hec_token, webhook_secret=secret).start()
    rsyslog = Rsyslog(folder / "rsyslog", pki)
    try:
        yield Receivers(folder, pki, rsyslog, http, folder / "hec-token", folder / "webhook-secret")
    finally:
        rsyslog.stop()
        http.stop()


def test_a_far_anydesk_session_and_a_pikvm_reach_every_siem_exactly_once(
    receivers: Receivers, collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    collector = collector_factory(collector_config(receivers.outputs_toml()))
    device_id, token = enrol_with_roster(collector, tmp_path)
    verdict = report_and_score(collector, device_id, token, seq=1)
    assert verdict["verdict"] == "farm", verdict

    rsyslog, http = receivers.rsyslog, receivers.http
    files = {"filebeat": receivers.folder / "ecs.ndjson", "lake-file": receivers.folder / "ocsf.ndjson"}

    def counts() -> dict[str, int]:
        found = {f"rsyslog-{name}": len(rsyslog.lines(name)) for name in ("tcp", "tls", "udp")}
        found |= {path: len(http.documents(path)) for path in ("/hec", "/ecs", "/ocsf", "/webhook")}
        found |= {name: len(path.read_text().splitlines()) if path.exists() else 0 for name, path in files.items()}
        return found

    wait_for(lambda: min(counts().values()) >= 1, 60, f"an alert at every receiver, got {counts()}")
    # The same farm again (a new report, another scoring run) is no news: nothing more is sent.
    assert report_and_score(collector, device_id, token, seq=2)["verdict"] == "farm"

    def listed() -> str:
        done = collector.cli("alerts", "list", "--db", collector.db_url)
        assert done.returncode == 0, done.stderr
        return done.stdout

    wait_for(lambda: listed().count(": delivered ") == 9, 30, "nine deliveries in `alerts list`")
    [headline] = [line for line in listed().splitlines() if not line.startswith(" ")]
    assert f"{device_id} (tp-anna)  clear -> farm  risk {verdict['risk']:.2f}" in headline
    assert counts() == dict.fromkeys(counts(), 1), collector.log()

    [alert_id] = {document["alert_id"] for document in http.documents("/webhook")}
    expected_link = f"{PUBLIC_URL}/console/devices/{device_id}"
    # the link is the device's console page: here it sends a visitor without a session to sign in
    page = httpx.get(expected_link.replace(PUBLIC_URL, collector.url), follow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login?next=")

    # rsyslog, TCP with octet counting: RFC 5424 header, then CEF.
    [tcp] = rsyslog.lines("tcp")
    assert tcp.startswith("<34>1 ") and " farmwatch " in tcp and " verdict-farm - CEF:0|farmwatch|farmwatch collector|" in tcp
    for piece in (f"externalId={alert_id}", "dhost=tp-anna", "duser=E-17", "cs1=farm", "cs2=clear",
                  "cs3=T1219,T1219.003", "cs4=Austin, US", f"cs6={expected_link}", "msg=ipkvm: A PiKVM"):
        assert piece in tcp, piece
    risk = verdict["risk"]
    assert f"|verdict-farm|laptop tp-anna of E-17 is farm (was clear), risk {risk:.2f}|{round(risk * 10)}|" in tcp
    # rsyslog, TLS with our client certificate: the JSON payload.
    [tls] = rsyslog.lines("tls")
    sent = json.loads(tls.split(" - ", 1)[1])
    assert (sent["alert_id"], sent["verdict"], sent["previous_verdict"], sent["claimed_city"]) == (alert_id, "farm", "clear", "Austin")
    assert {"ipkvm", "remote_access"} <= {f["detector"] for f in sent["findings"]}
    assert all(f["summary"] and "\n" not in f["summary"] for f in sent["findings"])
    assert sent["first_seen"] and sent["last_seen"] and sent["link"] == expected_link
    assert alert_id in rsyslog.lines("udp")[0]

    [hec] = http.documents("/hec")
    assert (hec["sourcetype"], hec["index"], hec["host"], hec["event"]["alert_id"]) == ("farmwatch:alert", "security", "tp-anna", alert_id)
    [ecs] = http.documents("/ecs")
    assert (ecs["event"]["kind"], ecs["event"]["id"], ecs["host"]["name"], ecs["user"]["id"]) == ("alert", alert_id, "tp-anna", "E-17")
    assert ecs["threat"]["technique"]["id"] == ["T1219", "T1219.003"] and ecs["risk"]["calculated_level"] == "farm"
    assert json.loads(files["filebeat"].read_text()) == ecs
    [ocsf] = http.documents("/ocsf")
    assert (ocsf["class_uid"], ocsf["activity_id"], ocsf["finding_info"]["uid"], ocsf["device"]["hostname"]) == (2004, 1, alert_id, "tp-anna")
    assert json.loads(files["lake-file"].read_text()) == ocsf
    [hook] = http.accepted("/webhook")
    assert hook.headers["x-farmwatch-alert-id"] == alert_id  # the receiver checked the HMAC before accepting


def test_outputs_test_sends_a_marked_test_alert_and_prints_each_answer(receivers: Receivers, tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(receivers.outputs_toml(("siem-tls", "splunk", "soar")))
    done = subprocess.run([*CLI, "outputs", "test", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("siem-tls (syslog tls://") and "accepted: 1 message(s) written over TLS" in lines[0]
    assert lines[1].startswith("splunk (splunk_hec http://") and 'accepted: HTTP 200 {"text": "Success", "code": 0}' in lines[1]
    assert lines[2].startswith("soar (webhook http://") and "accepted: HTTP 200" in lines[2]
    [hook] = receivers.http.documents("/webhook")
    assert hook["test"] is True and hook["title"].startswith("TEST ALERT")
    wait_for(lambda: len(receivers.rsyslog.lines("tls")) == 1, 10, "the test alert in rsyslog")
    assert '"test":true' in receivers.rsyslog.lines("tls")[0]

    receivers.http.stop()  # a receiver that is down: named, and the exit code says so
    done = subprocess.run([*CLI, "outputs", "test", "--config", str(config), "soar"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout.startswith("soar (webhook ") and "FAILED: POST" in done.stdout
    unknown = subprocess.run([*CLI, "outputs", "test", "--config", str(config), "nope"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "no output named 'nope' (configured: siem-tls, splunk, soar)" in unknown.stderr


def test_a_tls_receiver_that_refuses_our_certificate_is_a_failed_delivery(receivers: Receivers, tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(f'[[outputs]]\nname = "no-client-cert"\ntype = "syslog"\n'
                      f'url = "tls://127.0.0.1:{receivers.rsyslog.tls_port}"\nca_file = "{receivers.pki.ca}"\n'
                      f'server_name = "{SERVER_NAME}"\n')
    done = subprocess.run([*CLI, "outputs", "test", "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("no-client-cert (syslog tls://") and "FAILED:" in done.stdout
    assert receivers.rsyslog.lines("tls") == []
