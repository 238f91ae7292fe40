"""Spool-first delivery against the real collector process (the shared ``collector`` fixture).

Each test runs the installed ``farmwatch-agent`` CLI as a subprocess, as an operator would.
"""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_procs import BIN, agent_once, export, run_agent
from collector_process import RunningCollector, free_port

pytestmark = pytest.mark.slow

def seqs(collector: RunningCollector) -> list[int]:
    return [record["report"]["seq"] for record in export(collector)]


def spooled(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "spool").glob("*.json"))


def identity(state: Path) -> dict[str, str]:
    loaded: dict[str, str] = json.loads((state / "identity.json").read_text())
    return loaded


def one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_once_enrols_delivers_and_empties_the_spool(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    records = export(collector)
    assert [r["report"]["seq"] for r in records] == [1]
    assert records[0]["report"]["device_id"] == identity(state)["device_id"]
    assert records[0]["source_ip"] == "127.0.0.1"
    assert spooled(state) == []


def test_an_unreachable_collector_keeps_the_report_and_exits_75(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("anything\n")
    state = tmp_path / "state"
    done = run_agent("once", "--collector", f"http://127.0.0.1:{free_port()}", "--enroll-secret-file", str(secret),
                     "--state-dir", str(state), "--window", "0")
    assert done.returncode == 75
    line = one_clean_line(done.stderr)
    assert "unreachable" in line and "1 report(s) kept" in line
    assert spooled(state) == ["000000000001.json"]


def _spool_variant(state: Path, base: dict, seq: int, **changes: object) -> None:
    report = {**base, "seq": seq, **changes}
    (state / "spool" / f"{seq:012d}.json").write_text(json.dumps(report))


def test_a_rejected_report_is_quarantined_with_the_answer_and_the_rest_go_on(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    first = export(collector)[0]["report"]
    (state / "next_seq").write_text("4\n")  # seq 2 and 3 are the hand-made reports below
    _spool_variant(state, first, 2, agent={**first["agent"], "os": "plan9"})  # invalid: 422
    earlier = {"window_start": "2025-12-31T23:55:00Z", "window_end": "2026-01-01T00:00:00Z"}  # ends after it starts
    _spool_variant(state, first, 3, **earlier)
    _spool_variant(state, first, 1, **earlier)  # reuses a stored seq: 409, renumbered (test_agent_identity.py)

    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    assert sorted(seqs(collector)) == [1, 3, 4, 5]  # 4: the variant of seq 1; 5: this run's report
    quarantine = state / "quarantine"
    assert sorted(p.name for p in quarantine.glob("*.json")) == ["000000000002.json", "000000000002.response.json"]
    invalid = json.loads((quarantine / "000000000002.response.json").read_text())
    assert invalid["status"] == 422
    assert [e["field"] for e in invalid["answer"]["errors"]] == ["agent.os"]
    assert spooled(state) == []
    assert "quarantined seq 2" in done.stderr
    latest = max(export(collector), key=lambda record: record["report"]["seq"])["report"]
    assert {"probe": "agent", "message": "1 report(s) set aside in quarantine: seq 2: HTTP 422"} in latest["errors"]


def test_a_report_resent_after_a_lost_answer_is_stored_once(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    # As if the collector's 202 had been lost: the same report is still in the spool.
    _spool_variant(state, export(collector)[0]["report"], 1)
    assert agent_once(collector, state).returncode == 0
    assert seqs(collector) == [1, 2]
    assert not list((state / "quarantine").iterdir())


def test_a_revoked_token_leads_to_one_reenrolment_under_the_same_device(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    before = identity(state)
    revoked = collector.cli("devices", "revoke", "--db", collector.db_url, before["device_id"])
    assert revoked.returncode == 0, revoked.stderr

    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    after = identity(state)
    assert after["device_id"] == before["device_id"] and after["token"] != before["token"]
    assert seqs(collector) == [1, 2]


def test_a_wrong_enrol_secret_is_refused_in_one_line_and_the_report_is_kept(collector: RunningCollector, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    state = tmp_path / "state"
    done = run_agent("once", "--collector", collector.url, "--enroll-secret-file", str(wrong),
                     "--state-dir", str(state), "--window", "0")
    assert done.returncode == 77
    assert "refused the enrol secret" in one_clean_line(done.stderr)
    assert spooled(state) == ["000000000001.json"]
    assert seqs(collector) == []


def test_the_collectors_anchors_reach_the_agent_at_enrolment(collector: RunningCollector, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.csv"
    anchors.write_text("name,address,port,latitude,longitude\n"
                       "chicago,127.0.0.1,443,41.88,-87.63\ndallas,127.0.0.2,443,32.78,-96.80\n")
    imported = collector.cli("anchors", "import", "--db", collector.db_url, str(anchors))
    assert imported.returncode == 0, imported.stderr
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    cached = json.loads((state / "config.json").read_text())
    assert sorted(a["name"] for a in cached["config"]["anchors"]) == ["chicago", "dallas"]


def _run_agent_until(collector: RunningCollector, state: Path, done: Callable[[], bool]) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [str(BIN / "farmwatch-agent"), "run", "--collector", collector.url, "--enroll-secret-file",
         str(collector.enroll_secret_file), "--state-dir", str(state), "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not done() and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_run_reports_every_interval_and_stops_cleanly_on_sigterm(collector: RunningCollector, tmp_path: Path) -> None:
    finished = _run_agent_until(collector, tmp_path / "state", lambda: len(seqs(collector)) >= 3)
    assert finished.returncode == 0, finished.stderr
    reports = [record["report"] for record in export(collector)]
    assert [r["seq"] for r in reports] == list(range(1, len(reports) + 1)) and len(reports) >= 3
    for earlier, later in zip(reports, reports[1:]):
        assert later["window_start"] == earlier["window_end"]  # windows tile: no gap, no overlap


def test_run_keeps_reports_while_the_collector_is_down_and_delivers_them_in_order(
    collector_factory: Callable[..., RunningCollector], tmp_path: Path
) -> None:
    collector = collector_factory()
    collector.stop()
    state = tmp_path / "state"
    restarted: list[bool] = []

    def progress() -> bool:
        if not restarted and len(spooled(state)) >= 3:  # three windows passed with nobody listening
            collector.start()
            restarted.append(True)
        return bool(restarted) and len(seqs(collector)) >= 5

    finished = _run_agent_until(collector, state, progress)
    assert finished.returncode == 0, finished.stderr
    stored = seqs(collector)
    assert stored == list(range(1, len(stored) + 1)) and len(stored) >= 5
    assert "unreachable" in finished.stderr


def test_a_damaged_spool_file_is_set_aside_and_the_rest_delivered(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert agent_once(collector, state).returncode == 0
    (state / "next_seq").write_text("3\n")
    (state / "spool" / "000000000002.json").write_bytes(b'{"schema": "farmwatch.rep')  # cut short
    done = agent_once(collector, state)
    assert done.returncode == 0, done.stderr
    assert seqs(collector) == [1, 3]
    beside = json.loads((state / "quarantine" / "000000000002.response.json").read_text())
    assert beside["status"] is None and "not a JSON report" in beside["answer"]


class _NoHealthyUpstream(http.server.BaseHTTPRequestHandler):
    """What a load balancer in front of collector replicas answers while none is healthy."""

    def _busy(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "19")
        self.end_headers()
        self.wfile.write(b"no healthy upstream")

    do_GET = do_POST = _busy

    def log_message(self, *args: object) -> None:
        pass


def test_a_5xx_keeps_the_report_for_a_later_run(collector: RunningCollector, tmp_path: Path) -> None:
    balancer = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoHealthyUpstream)
    threading.Thread(target=balancer.serve_forever, daemon=True).start()
    state = tmp_path / "state"
    try:
        done = run_agent("once", "--collector", f"http://127.0.0.1:{balancer.server_port}", "--enroll-secret-file",
                         str(collector.enroll_secret_file), "--state-dir", str(state), "--window", "0")
    finally:
        balancer.shutdown()
        balancer.server_close()
    assert done.returncode == 75
    assert "answered 503" in one_clean_line(done.stderr)
    assert spooled(state) == ["000000000001.json"]

    assert agent_once(collector, state).returncode == 0  # the upstream is back
    assert seqs(collector) == [1, 2]
