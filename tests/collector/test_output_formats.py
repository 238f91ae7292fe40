"""Output bytes pinned by the specs' own examples, one contract test over every registered output,
and the one-line refusals of a broken ``[[outputs]]`` table (by ``serve`` itself)."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from collector_helpers import serve_refusal
from throwaway_ca import make_pki

from farmwatch.collector.alerts import Alert, AlertFinding
from farmwatch.collector.config import ConfigError, load_config
from farmwatch.collector.outputs import REGISTRY, build, cef
from farmwatch.collector.outputs.base import OutputConfigError, parse_outputs
from farmwatch.collector.outputs.ocsf import detection_finding
from farmwatch.collector.outputs.syslog import octet_counted, syslog_message
from farmwatch.collector.outputs.webhook import signature

EXAMPLE_TIME = datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=timezone.utc)


def test_rfc5424_example_1() -> None:
    # RFC 5424 §6.5 Example 1, without its BOM (§6.4 permits MSG-ANY; CEF parsers expect "CEF:" first).
    message = syslog_message(34, EXAMPLE_TIME, "mymachine.example.com", "su", None, "ID47", None,
                             "'su root' failed for lucas on /dev/pts/8")
    assert message == b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lucas on /dev/pts/8"


def test_rfc5424_example_3_with_structured_data() -> None:
    # RFC 5424 §6.5 Example 3 (BOM omitted as above).
    sd = '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
    message = syslog_message(165, EXAMPLE_TIME, "mymachine.example.com", "evntslog", None, "ID47", sd,
                             "An application event log entry...")
    assert message == (b'<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                       b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
                       b"An application event log entry...")


def test_rfc6587_octet_counting_frames_the_message_by_its_byte_length() -> None:
    # RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG, the length counted in octets (é is two).
    assert octet_counted("<34>1 - - - - - - café".encode()) == b"23 <34>1 - - - - - - caf\xc3\xa9"


@pytest.mark.parametrize(
    ("name", "extension", "expected"),
    [
        # The CEF Implementation Standard's examples ("Character Encoding"), verbatim.
        pytest.param("worm successfully stopped", [("src", "10.0.0.1"), ("dst", "2.1.2.2"), ("spt", "1232")],
                     "CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2.1.2.2 spt=1232",
                     id="plain"),
        pytest.param("detected a | in message", [("src", "10.0.0.1"), ("act", "blocked a |"), ("dst", "1.1.1.1")],
                     "CEF:0|Security|threatmanager|1.0|100|detected a \\| in message|10|src=10.0.0.1 act=blocked a | dst=1.1.1.1",
                     id="pipe"),
        pytest.param("detected a \\ in packet", [("src", "10.0.0.1"), ("act", "blocked a \\"), ("dst", "1.1.1.1")],
                     "CEF:0|Security|threatmanager|1.0|100|detected a \\\\ in packet|10|src=10.0.0.1 act=blocked a \\\\ dst=1.1.1.1",
                     id="backslash"),
        pytest.param("detected a = in message", [("src", "10.0.0.1"), ("act", "blocked a ="), ("dst", "1.1.1.1")],
                     "CEF:0|Security|threatmanager|1.0|100|detected a = in message|10|src=10.0.0.1 act=blocked a \\= dst=1.1.1.1",
                     id="equals"),
        pytest.param("multi-line", [("msg", "Detected a threat.\nNo action needed.")],
                     "CEF:0|Security|threatmanager|1.0|100|multi-line|10|msg=Detected a threat.\\nNo action needed.",
                     id="newline"),
        pytest.param("two\nlines in a header", [("msg", "a\r\nb")],
                     "CEF:0|Security|threatmanager|1.0|100|two lines in a header|10|msg=a\\nb",
                     id="newline-in-header-is-a-space"),
    ],
)
def test_cef_escaping_follows_the_standards_examples(name: str, extension: list[tuple[str, str]], expected: str) -> None:
    assert cef.cef_line(0, "Security", "threatmanager", "1.0", "100", name, 10, extension) == expected


@pytest.mark.parametrize(("risk", "severity"), [(0.0, 0), (0.04, 0), (0.55, 6), (0.93, 9), (1.0, 10)])
def test_cef_severity_is_risk_on_0_to_10(risk: float, severity: int) -> None:
    assert cef.severity(risk) == severity


def sample_alert(**changes: object) -> Alert:
    fields: dict[str, object] = dict(
        alert_id="0b9f6d1e-5c1a-4a57-9f55-1d2c3e4f5a6b", device_id="dev-42", hostname="tp-anna|x=y",
        employee_id="E-17", claimed_city="Austin", claimed_country="US", verdict="farm", previous_verdict="review",
        risk=0.93, attack_ids=("T1200", "T1219"),
        findings=(AlertFinding(detector="remote_access", severity="high", score=0.9, attack="T1219",
                               summary="AnyDesk controlled from 7400 km away", evidence={"tool": "anydesk"}),
                  AlertFinding(detector="ipkvm", severity="critical", score=0.95, attack="T1200",
                               summary="a PiKVM is plugged in", evidence={"usb": "1d6b:0104"})),
        first_seen=datetime(2026, 11, 28, 8, tzinfo=timezone.utc), last_seen=datetime(2026, 11, 28, 9, tzinfo=timezone.utc),
        raised_at=datetime(2026, 11, 28, 9, 5, tzinfo=timezone.utc), link="https://fw.example.com/console/devices/dev-42",
    )
    fields.update(changes)
    return Alert.model_validate(fields)


def test_the_alert_as_cef_escapes_what_a_device_controls() -> None:
    line = cef.format_alert(sample_alert())
    assert line.startswith("CEF:0|farmwatch|farmwatch collector|")
    assert "|laptop tp-anna\\|x=y of E-17 is farm (was review), risk 0.93|9|" in line  # | escaped in the header
    assert " dhost=tp-anna|x\\=y " in line  # = escaped in the extension, | not
    assert " cs3=T1200,T1219 cs3Label=attackIds " in line
    assert "msg=remote_access: AnyDesk controlled from 7400 km away\\nipkvm: a PiKVM is plugged in" in line


def test_ocsf_detection_finding_has_the_classes_required_fields() -> None:
    finding = detection_finding(sample_alert())
    assert (finding["class_uid"], finding["category_uid"], finding["activity_id"], finding["type_uid"]) == (2004, 2, 2, 200402)
    assert finding["finding_info"]["uid"] == "0b9f6d1e-5c1a-4a57-9f55-1d2c3e4f5a6b"
    assert [a["technique"]["uid"] for a in finding["finding_info"]["attacks"]] == ["T1200", "T1219"]
    assert finding["metadata"]["version"] == "1.3.0" and finding["severity_id"] == 5
    resolved = detection_finding(sample_alert(verdict="clear", previous_verdict="farm", risk=0.1))
    assert (resolved["activity_id"], resolved["status_id"]) == (3, 4)


def test_webhook_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(b"k" * 32, b"1764320700." + b'{"a":1}', hashlib.sha256).hexdigest()
    assert signature("k" * 32, "1764320700", b'{"a":1}') == f"sha256={expected}"


def minimal_table(kind: str, tmp_path: Path) -> dict[str, object]:
    """The smallest working [[outputs]] table of each type (nothing listens: format only)."""
    secret = tmp_path / "secret"
    secret.write_text("s" * 32)
    return {
        "syslog": {"url": "tcp://127.0.0.1:6514"},
        "splunk_hec": {"url": "http://127.0.0.1:8088/services/collector/event", "token_file": str(secret)},
        "ecs_file": {"url": str(tmp_path / "ecs.ndjson")},
        "ecs_http": {"url": "http://127.0.0.1:9200/ingest"},
        "ocsf": {"url": str(tmp_path / "ocsf.ndjson")},
        "webhook": {"url": "https://127.0.0.1:8443/hook", "secret_file": str(secret)},
    }[kind] | {"type": kind}


checked: set[str] = set()


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_output_formats_the_alert_with_its_stable_id(kind: str, tmp_path: Path) -> None:
    [settings] = parse_outputs([minimal_table(kind, tmp_path)], REGISTRY, "test")
    output = build(settings)
    assert isinstance(output.format(sample_alert()), bytes)
    assert b"0b9f6d1e-5c1a-4a57-9f55-1d2c3e4f5a6b" in output.format(sample_alert())
    for key in ("type", "url"):
        with pytest.raises(OutputConfigError):
            parse_outputs([{**minimal_table(kind, tmp_path), key: "nope://x"}], REGISTRY, "test")
    with pytest.raises(OutputConfigError, match="unknown key"):
        parse_outputs([{**minimal_table(kind, tmp_path), "colour": "red"}], REGISTRY, "test")
    for required in REGISTRY[kind].required:
        table = minimal_table(kind, tmp_path)
        del table[required]
        with pytest.raises(OutputConfigError, match=f"{required} is missing"):
            parse_outputs([table], REGISTRY, "test")
    checked.add(kind)


def test_the_contract_test_ran_for_every_output() -> None:
    assert checked == set(REGISTRY)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("table", "words"),
    [
        pytest.param('type = "carrier-pigeon"\nurl = "tcp://127.0.0.1:1"', "unknown output type 'carrier-pigeon'", id="unknown-type"),
        pytest.param('type = "syslog"\nurl = "127.0.0.1:514"', "output 'syslog' (syslog) url: '127.0.0.1:514' must start with udp://, tcp://, tls://", id="no-scheme"),
        pytest.param('type = "webhook"', "output 'webhook' (webhook): url is missing", id="missing-url"),
        pytest.param('type = "webhook"\nurl = "ftp://h/x"\nsecret_file = "/etc/hostname"', "must start with http://, https://", id="bad-scheme"),
        pytest.param('type = "webhook"\nurl = "http://127.0.0.1:1/"\nsecret_file = "/nonexistent/secret"',
                     "secret_file: cannot read /nonexistent/secret", id="unreadable-secret"),
        pytest.param('type = "syslog"\nurl = "tcp://127.0.0.1:1"\nfacility = 3', "unknown key(s) facility", id="unknown-key"),
    ],
)
def test_serve_refuses_a_broken_output_in_one_line(tmp_path: Path, table: str, words: str) -> None:
    line = serve_refusal(tmp_path, f"[[outputs]]\n{table}\n")
    assert words in line, line


def test_public_url_is_checked(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("s" * 20)
    for bad in ("farmwatch.example.com", "ftp://x", "https://x/?q=1"):
        (tmp_path / "c.toml").write_text(f'[collector]\npublic_url = "{bad}"\n')
        with pytest.raises(ConfigError, match="public_url"):
            load_config(tmp_path / "c.toml", enroll_secret_file=tmp_path / "s", analyst_token_file=tmp_path / "s")
    (tmp_path / "c.toml").write_text('[collector]\npublic_url = "https://fw.example.com/farmwatch/"\n')
    config = load_config(tmp_path / "c.toml", enroll_secret_file=tmp_path / "s", analyst_token_file=tmp_path / "s")
    assert config.public_url == "https://fw.example.com/farmwatch"


def readme_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text.split("## Sending alerts to your SIEM", 1)[1].split("\n## ", 1)[0]


def test_the_readme_examples_work(tmp_path: Path) -> None:
    toml, python = (block.split("\n", 1)[1] for block in readme_section().split("```")[1:4:2])
    pki = make_pki(tmp_path / "pki")
    for name, source in {"siem-ca.pem": pki.ca, "client.pem": pki.client_cert, "client-key.pem": pki.client_key}.items():
        (tmp_path / name).write_bytes(source.read_bytes())
    for secret in ("hec-token", "webhook-secret", "s"):
        (tmp_path / secret).write_text("x" * 32)
    config_file = tmp_path / "collector.toml"
    config_file.write_text(toml.replace("/etc/farmwatch/", f"{tmp_path}/").replace("/var/log/farmwatch/", f"{tmp_path}/"))
    config = load_config(config_file, enroll_secret_file=tmp_path / "s", analyst_token_file=tmp_path / "s")
    assert sorted(settings.type for settings in config.outputs) == sorted(REGISTRY)
    assert config.public_url == "https://farmwatch.example.com"

    namespace: dict[str, object] = {}
    exec(python, namespace)  # the README's signature check, against what the webhook output sends
    body, timestamp = b'{"alert_id":"a"}', str(int(time.time()))
    headers = {"X-Farmwatch-Timestamp": timestamp, "X-Farmwatch-Signature": signature("k" * 32, timestamp, body)}
    genuine = namespace["genuine"]
    assert callable(genuine)
    assert genuine(b"k" * 32, headers, body) is True
    assert genuine(b"k" * 32, headers, body + b" ") is False
