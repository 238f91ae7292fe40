"""serve's report writes in a child process (writer_process.py, issue 13): answers cross the process
boundary as the group commit gave them (new, resend, conflict, one report's error alone), the child
is a real spawned process named fw-writer, a child that dies has its waiting reports answered 503
(the agent sends them again, stored once) and is started again, and it stops with the app."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
import pytest
from collector_helpers import auth, report_for
from collector_process import RunningCollector
from prometheus_client import CollectorRegistry
from test_report_batches import GEO, enrol

from farmwatch.collector.ingest import Received, Rejected
from farmwatch.collector.storage import Storage, StoredReport, token_digest
from farmwatch.collector.writer_process import WriterGone, WriterProcess, _pickled

NOW = datetime.now(timezone.utc).replace(minute=10)


def received(device_id: str, seq: int, token: str, sender: str | None = None, body: bytes | None = None,
             **changes: object) -> Received:
    """A report as the event loop hands it over: ``sender``, the token's device (``device_id`` when None)."""
    body = body if body is not None else json.dumps(report_for(device_id, seq, **changes)).encode()
    return Received(body, NOW, NOW + timedelta(days=1), sender or device_id, "127.0.0.1", GEO, None, token_digest(token))


def test_answers_cross_from_the_child_as_the_group_commit_gives_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'writer.db'}"
    storage = Storage.open(url)
    enrol(storage, "dev-w", "token-w")

    async def scenario() -> list[object]:
        writer = WriterProcess(url, CollectorRegistry())
        await writer.start()
        try:
            first = await writer.write_report(received("dev-w", 1, "token-w"))
            assert writer.child is not None and writer.child.pid != os.getpid()
            assert psutil.Process(writer.child.pid).name() == "fw-writer"  # named by then: it has written
            together = await asyncio.gather(
                writer.write_report(received("dev-w", 1, "token-w")),  # a resend
                writer.write_report(received("dev-w", 1, "token-w", comment="other content")),  # a conflict
                writer.write_report(received("dev-w", 2, "token-w")),
                writer.write_report(received("dev-nobody", 1, "token-nobody")),  # fails alone
                writer.write_report(received("dev-w", 3, "token-w", body=b'{"seq": "three"}')),  # refused alone
                writer.write_report(received("dev-w", 3, "token-w", sender="dev-other")),  # not the token's device
                return_exceptions=True)
            # The first of them went alone, the child being idle; the other five queued behind it, one batch.
            assert writer.batches == 3
            return [first, *together]
        finally:
            child = writer.child
            await writer.stop()
            assert child is not None and not child.is_alive()  # the app's shutdown ends it

    first, resend, conflict, second, unknown, invalid, forbidden = asyncio.run(scenario())
    assert first == (StoredReport(new=True, conflict=False), 1)
    assert resend == (StoredReport(new=False, conflict=False), 1)
    assert conflict == (StoredReport(new=False, conflict=True), 1)
    assert second == (StoredReport(new=True, conflict=False), 2)
    assert isinstance(unknown, LookupError) and "dev-nobody" in str(unknown)
    assert isinstance(invalid, Rejected) and invalid.status == 422
    assert {error["field"] for error in invalid.errors} >= {"seq", "device_id"}
    assert isinstance(forbidden, Rejected) and forbidden.status == 403 and forbidden.errors[0]["field"] == "device_id"
    assert [record["report"]["seq"] for record in storage.device_records("dev-w")] == [1, 2]
    storage.close()


def test_a_child_that_died_is_started_again_and_reports_meanwhile_are_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'writer.db'}"
    storage = Storage.open(url)
    enrol(storage, "dev-w", "token-w")
    registry = CollectorRegistry()

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    async def scenario() -> tuple[BaseException | None, StoredReport, int, int]:
        writer = WriterProcess(url, registry)
        await writer.start()
        first = writer.child
        assert first is not None and first.pid is not None and writer.running
        os.kill(first.pid, signal.SIGKILL)
        await asyncio.to_thread(first.join, 30)
        await until(lambda: not writer.running)
        refused: BaseException | None = None
        try:  # within RESTART_SECONDS: refused, not a start of its own
            await writer.write_report(received("dev-w", 1, "token-w"))
        except WriterGone as failure:
            refused = failure
        await until(lambda: writer.running)  # started again with no report asking for it
        second = writer.child
        assert second is not None and second.pid is not None
        stored, _ = await writer.write_report(received("dev-w", 1, "token-w"))
        await writer.stop()
        return refused, stored, first.pid, second.pid

    refused, stored, first_pid, second_pid = asyncio.run(scenario())
    assert isinstance(refused, WriterGone)
    assert stored == StoredReport(new=True, conflict=False)
    assert second_pid != first_pid
    assert registry.get_sample_value("farmwatch_writer_restarts_total") == 1
    storage.close()


@pytest.mark.slow
def test_a_report_waiting_on_a_writer_that_dies_is_503_and_stored_once_when_sent_again(
        collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory()
    device = collector.enrol(hardware_id="hw-writer", hostname="host-writer")
    device_id, token = str(device["device_id"]), device["token"]

    def post(seq: int) -> httpx.Response:
        return httpx.post(f"{collector.url}/api/v1/reports", content=json.dumps(report_for(device_id, seq)).encode(),
                          headers={**auth(token), "Content-Type": "application/json"}, timeout=30)

    assert post(1).status_code == 202
    writer = collector.child("fw-writer")
    writer.suspend()  # the next batch waits in its socket, unread
    with httpx.Client(timeout=30) as client:
        waiting = client.build_request("POST", f"{collector.url}/api/v1/reports",
                                       content=json.dumps(report_for(device_id, 2)).encode(),
                                       headers={**auth(token), "Content-Type": "application/json"})

        async def send_then_kill() -> httpx.Response:
            async with httpx.AsyncClient(timeout=30) as async_client:
                sent = asyncio.create_task(async_client.send(waiting))
                await asyncio.sleep(1.0)
                assert not sent.done()  # not acknowledged: its batch is not written
                writer.kill()
                return await sent

        answer = asyncio.run(send_then_kill())
    assert answer.status_code == 503 and answer.json()["errors"][0]["field"] == "(server)", answer.text
    assert int(answer.headers["retry-after"]) >= 1
    health = [httpx.get(f"{collector.url}/healthz", timeout=10)]  # the writer starts again 2 s after it died
    while health[-1].status_code != 200 and len(health) < 200:
        time.sleep(0.1)
        health.append(httpx.get(f"{collector.url}/healthz", timeout=10))
    assert health[0].status_code == 503 and health[0].json()["status"] == "degraded", health[0].text
    assert "writer" in health[0].json()["problem"]
    assert health[-1].status_code == 200, health[-1].text
    deadline = time.monotonic() + 30
    while (again := post(2)).status_code == 503 and time.monotonic() < deadline:  # as the agent's spool does
        time.sleep(0.5)
    assert again.status_code == 202, again.text
    assert post(2).status_code == 202  # a resend now: stored once
    assert collector.child("fw-writer").pid != writer.pid
    with sqlite3.connect(collector.db_path) as db:
        stored = db.execute("SELECT seq, count(*) FROM reports GROUP BY seq ORDER BY seq").fetchall()
    assert stored == [(1, 1), (2, 1)]
    metrics = httpx.get(f"{collector.url}/metrics", timeout=10).text
    assert "farmwatch_writer_restarts_total 1.0" in metrics


class _TwoArguments(Exception):
    def __init__(self, what: str, where: str) -> None:  # pickles, but unpickling calls it with one argument
        super().__init__(f"{what} at {where}")


def test_an_error_that_does_not_unpickle_crosses_as_its_kind_and_message() -> None:
    reply = pickle.loads(_pickled([(False, _TwoArguments("broken", "here")), (False, Rejected(422, "invalid", []))]))
    (_, odd), (_, rejected) = reply
    assert type(odd) is RuntimeError and str(odd) == "_TwoArguments: broken at here"
    assert isinstance(rejected, Rejected) and rejected.status == 422  # one that round-trips is sent as it is
