"""What each output does when it sends: file rotation, and the answers of a real local HTTP receiver
(tests/fixtures/siem_receivers.py) that checks the HEC token and the webhook's signature."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from siem_receivers import HttpReceiver
from test_output_formats import sample_alert

from farmwatch.collector.outputs import REGISTRY, build
from farmwatch.collector.outputs.base import DeliveryFailed, Output, parse_outputs


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    running = HttpReceiver(hec_token="right-token", webhook_secret="w" * 32).start()
    try:
        yield running
    finally:
        running.stop()


def output(table: dict[str, object]) -> Output:
    [settings] = parse_outputs([table], REGISTRY, "test")
    return build(settings)


def test_ecs_file_rotates_by_size_and_keeps_the_configured_backups(tmp_path: Path) -> None:
    path = tmp_path / "alerts.ndjson"
    ecs = output({"type": "ecs_file", "url": str(path), "max_bytes": 3000, "backups": 2})
    line_bytes = len(ecs.format(sample_alert())) + 1
    assert 3000 // 3 < line_bytes <= 3000 // 2  # two alerts fit a file, a third rotates it
    for n in range(7):
        ecs.send([sample_alert(alert_id=f"id-{n}")])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["alerts.ndjson", "alerts.ndjson.1", "alerts.ndjson.2"]  # the oldest ones are gone
    ids = [json.loads(line)["event"]["id"] for name in reversed(names) for line in (tmp_path / name).read_text().splitlines()]
    assert ids == ["id-2", "id-3", "id-4", "id-5", "id-6"]


def test_splunk_hec_sends_the_token_and_a_wrong_one_is_a_failed_delivery(receiver: HttpReceiver, tmp_path: Path) -> None:
    (tmp_path / "good").write_text("right-token\n")
    (tmp_path / "bad").write_text("wrong-token\n")
    table = {"type": "splunk_hec", "url": f"{receiver.url}/hec", "index": "security"}
    answer = output({**table, "token_file": str(tmp_path / "good")}).send([sample_alert(), sample_alert(alert_id="two")])
    assert answer == 'HTTP 200 {"text": "Success", "code": 0}'
    assert [event["event"]["alert_id"] for event in receiver.documents("/hec")] == [sample_alert().alert_id, "two"]
    with pytest.raises(DeliveryFailed, match='HTTP 401 {"text": "Invalid authorization", "code": 3}'):
        output({**table, "token_file": str(tmp_path / "bad")}).send([sample_alert()])


def test_a_webhook_with_the_wrong_secret_is_refused_by_the_receiver(receiver: HttpReceiver, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("not-the-receivers-secret")
    hook = output({"type": "webhook", "url": f"{receiver.url}/webhook", "secret_file": str(tmp_path / "secret")})
    with pytest.raises(DeliveryFailed, match="HTTP 401") as refused:
        hook.send([sample_alert()])
    assert refused.value.accepted == 0 and receiver.accepted("/webhook") == []


@pytest.mark.parametrize("kind", ["ecs_http", "ocsf"])
def test_ndjson_over_http_names_every_alert_id(receiver: HttpReceiver, kind: str) -> None:
    sent = output({"type": kind, "url": f"{receiver.url}/{kind}"}).send([sample_alert(), sample_alert(alert_id="two")])
    assert sent.startswith("HTTP 200")
    [request] = receiver.accepted(f"/{kind}")
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.headers["x-farmwatch-alert-ids"] == f"{sample_alert().alert_id},two"
    assert len(receiver.documents(f"/{kind}")) == 2


def test_a_receiver_that_is_not_there_is_a_failed_delivery_naming_it(receiver: HttpReceiver) -> None:
    url = receiver.url
    receiver.stop()
    with pytest.raises(DeliveryFailed, match=f"POST {url}/ecs: ConnectionRefusedError"):
        output({"type": "ecs_http", "url": f"{url}/ecs"}).send([sample_alert()])
    with pytest.raises(DeliveryFailed, match="tcp://127.0.0.1:1: ConnectionRefusedError"):
        output({"type": "syslog", "url": "tcp://127.0.0.1:1"}).send([sample_alert()])
