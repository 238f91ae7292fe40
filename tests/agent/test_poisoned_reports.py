"""A report the collector fails on (5xx) for ever is set aside; a collector that is merely down loses nothing.

The collector no longer answers 5xx to any client input (issue 15), so a "poisoned" report is made
by a small reverse proxy written for this test: it forwards everything to the real collector
process, except that it answers 500 to the seqs it is told to (as the old seq-overflow bug did),
or 500 to every report (a collector failing as a whole). The agent is the real CLI.
"""

from __future__ import annotations

import gzip
import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import export, run_agent
from collector_process import RunningCollector, free_port

from farmwatch.agent.delivery.transport import MAX_FAILED_ATTEMPTS

pytestmark = pytest.mark.slow


class PoisoningProxy:
    """Forwards to ``upstream``; answers 500 to report POSTs whose seq is in ``poisoned`` (or all)."""

    def __init__(self, upstream: RunningCollector) -> None:
        self.poisoned: set[int] = set()
        self.fail_every_report = False
        self.answered_500 = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and self.path == "/api/v1/reports":
                    seq = json.loads(gzip.decompress(body))["seq"]
                    if proxy.fail_every_report or seq in proxy.poisoned:
                        proxy.answered_500 += 1
                        self._answer(500, b'{"errors": [{"field": "", "message": "internal error"}]}')
                        return
                connection = http.client.HTTPConnection("127.0.0.1", upstream.port, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                    answer = connection.getresponse()
                    self._answer(answer.status, answer.read())
                finally:
                    connection.close()

            def _answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(collector: RunningCollector) -> Iterator[PoisoningProxy]:
    running = PoisoningProxy(collector)
    yield running
    running.close()


def once_via(url: str, collector: RunningCollector, state: Path) -> int:
    done = run_agent("once", "--collector", url, "--enroll-secret-file", str(collector.enroll_secret_file),
                     "--state-dir", str(state), "--window", "0")
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def spooled(state: Path) -> list[int]:
    return sorted(int(p.stem) for p in (state / "spool").glob("*.json"))


def stored(collector: RunningCollector) -> list[int]:
    return sorted(record["report"]["seq"] for record in export(collector))


def test_a_report_the_collector_always_fails_on_is_quarantined_and_the_rest_flow(
    collector: RunningCollector, proxy: PoisoningProxy, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    proxy.poisoned = {2}
    assert once_via(proxy.url, collector, state) == 0  # seq 1
    runs = [once_via(proxy.url, collector, state) for _ in range(MAX_FAILED_ATTEMPTS + 1)]
    # The first run made seq 2 and had nothing behind it to tell a failing report from a failing
    # collector; every later run's own report got past seq 2, counting one failed attempt.
    assert runs == [75] + [0] * MAX_FAILED_ATTEMPTS
    assert stored(collector) == [1, *range(3, 3 + MAX_FAILED_ATTEMPTS)]
    assert spooled(state) == []
    reason = json.loads((state / "quarantine" / "000000000002.response.json").read_text())
    assert f"{MAX_FAILED_ATTEMPTS} passes failed on this report" in reason["answer"]
    assert once_via(proxy.url, collector, state) == 0
    last = max(export(collector), key=lambda r: r["report"]["seq"])["report"]
    assert any(e["probe"] == "agent" and "seq 2: collector at" in e["message"] for e in last["errors"])


def test_a_failing_or_unreachable_collector_keeps_the_whole_spool(
    collector: RunningCollector, proxy: PoisoningProxy, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    assert once_via(proxy.url, collector, state) == 0  # enrolled, seq 1 stored
    proxy.fail_every_report = True  # up, but failing on every report: nothing is anyone's fault
    assert [once_via(proxy.url, collector, state) for _ in range(MAX_FAILED_ATTEMPTS + 1)] == [75] * 6
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert [once_via(unreachable, collector, state) for _ in range(2)] == [75, 75]
    assert proxy.answered_500 > MAX_FAILED_ATTEMPTS
    assert spooled(state) == list(range(2, 2 + MAX_FAILED_ATTEMPTS + 3))
    assert not list((state / "quarantine").iterdir())
    assert not (state / "spool" / "failed-attempts").exists()  # no attempt was counted against a report

    proxy.fail_every_report = False
    assert once_via(proxy.url, collector, state) == 0
    assert stored(collector) == list(range(1, 2 + MAX_FAILED_ATTEMPTS + 4))
