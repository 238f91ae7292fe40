"""Enrolment and the hourly config refresh, in-process against the real collector process.

The clock is the one injected into :class:`Enrolment` (the agent passes ``ProbeContext.clock``),
so an hour passes without waiting for it.
"""

from __future__ import annotations

import http.server
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from collector_process import RunningCollector

from farmwatch.agent.delivery.enrolment import CONFIG_REFRESH_SECONDS, Enrolment
from farmwatch.agent.errors import CollectorRefused
from farmwatch.agent.delivery.hardware_id import hardware_id
from farmwatch.agent.delivery.http_client import CollectorClient
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.runner import Runner
from farmwatch.agent.delivery.state import StateDir
from farmwatch.agent.delivery.spool import Spool
from farmwatch.agent.delivery.transport import deliver
from farmwatch.contract import to_wire

pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)
ANCHORS = "name,address,port,latitude,longitude\n{rows}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def enrolment(collector: RunningCollector, state: Path, clock: Clock, secret: str | None = None) -> Enrolment:
    http = CollectorClient(collector.url, timeout=10)
    return Enrolment(http, StateDir(state), secret or collector.enroll_secret, "test-host",
                      hardware_id("machine-under-test"), clock)


def import_anchors(collector: RunningCollector, tmp_path: Path, *names: str) -> None:
    rows = "".join(f"{name},127.0.0.1,443,41.88,-87.63\n" for name in names)
    path = tmp_path / f"anchors-{len(names)}.csv"
    path.write_text(ANCHORS.format(rows=rows))
    done = collector.cli("anchors", "import", "--db", collector.db_url, str(path))
    assert done.returncode == 0, done.stderr


def anchor_names(agent: Enrolment) -> list[str]:
    return sorted(a.name for a in agent.refresh_config().anchors)


def test_config_is_read_at_enrolment_then_at_most_hourly(collector: RunningCollector, tmp_path: Path) -> None:
    clock = Clock()
    import_anchors(collector, tmp_path, "chicago")
    agent = enrolment(collector, tmp_path / "state", clock)
    agent.identity()
    assert anchor_names(agent) == ["chicago"]  # read right after enrolment

    import_anchors(collector, tmp_path, "chicago", "dallas")
    clock.now += CONFIG_REFRESH_SECONDS / 2
    assert anchor_names(agent) == ["chicago"]  # within the hour: the cached config
    clock.now += CONFIG_REFRESH_SECONDS / 2
    assert anchor_names(agent) == ["chicago", "dallas"]


def test_a_reinstalled_agent_keeps_its_device_and_resumes_its_sequence(collector: RunningCollector, tmp_path: Path) -> None:
    first = enrolment(collector, tmp_path / "old-install", Clock())
    device = first.identity()
    runner = Runner(ProbeContext(), names=[])
    spool = Spool(first.state.spool_dir, first.state.quarantine_dir)
    for _ in range(2):
        seq = first.state.allocate_seq()
        spool.put(seq, json.dumps(to_wire(runner.report(device.device_id, seq, T0, T1))).encode())
    assert deliver(spool, first).delivered == [1, 2]

    # A reinstall: a fresh state dir on the same machine gets the same device and the next seq.
    again = enrolment(collector, tmp_path / "new-install", Clock())
    assert again.identity().device_id == device.device_id
    assert again.identity().token != device.token
    assert again.state.allocate_seq() == 3


def test_a_wrong_secret_is_refused_for_good(collector: RunningCollector, tmp_path: Path) -> None:
    agent = enrolment(collector, tmp_path / "state", Clock(), secret="wrong")
    with pytest.raises(CollectorRefused, match="refused the enrol secret"):
        agent.identity()
    assert agent.state.identity is None


class _OverflowingCollector(http.server.BaseHTTPRequestHandler):
    """An older collector (hand-written stand-in) whose enrolment handed out next_seq 2^63 (issue 15)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"device_id": "dev-old", "token": "t", "next_seq": 2**63}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_next_seq_past_the_contract_is_ignored(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OverflowingCollector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        state = StateDir(tmp_path / "state")
        http_client = CollectorClient(f"http://127.0.0.1:{server.server_port}", timeout=10)
        Enrolment(http_client, state, "secret", "test-host", hardware_id("m"), Clock()).reenroll()
    finally:
        server.shutdown()
        server.server_close()
    assert state.allocate_seq() == 1  # a report it can send, not one every collector must refuse
