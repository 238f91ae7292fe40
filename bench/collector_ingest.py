"""How many reports a second one collector process stores, against the rate it answers /healthz.

A real ``farmwatch-collector serve`` on loopback; DEVICES devices enrol over HTTP, then CLIENTS
threads post gzip reports (the tests' fixture report, each device counting its own seq) as agents
do. The baseline is the same clients asking /healthz the same number of times: the HTTP stack's
floor, so the ratio shows what validation and storage add. The store is counted afterwards: every
acknowledged report must be there exactly once. "Laptops carried" is the rate times the agent's
default 300 s reporting interval. Runs on the embedded SQLite default, and on a throwaway
PostgreSQL when this machine can start one (root and the server binaries). Clients, collector and
database share this machine's cores, so the figures are a floor for a dedicated collector host.
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS / "fixtures"))
sys.path.insert(0, str(TESTS / "collector"))
from collector_helpers import report_for  # noqa: E402  (the tests' valid fixture report)
from collector_process import RunningCollector, free_port, launch_collector  # noqa: E402
import postgres_server  # noqa: E402

DEVICES = 200
CLIENTS = 8
REPORTS_PER_DEVICE = 15
AGENT_INTERVAL_SECONDS = 300


def timed_requests(jobs: list[Callable[[httpx.Client], None]]) -> tuple[float, list[float]]:
    """Run ``jobs`` over CLIENTS threads (one connection each); wall seconds and per-request latencies."""
    latencies: list[float] = []

    def worker(share: list[Callable[[httpx.Client], None]]) -> list[float]:
        spent = []
        with httpx.Client(timeout=60) as client:
            for job in share:
                began = time.perf_counter()
                job(client)
                spent.append(time.perf_counter() - began)
        return spent

    began = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for spent in pool.map(worker, [jobs[i::CLIENTS] for i in range(CLIENTS)]):
            latencies.extend(spent)
    return time.perf_counter() - began, latencies


def report_jobs(collector: RunningCollector) -> list[Callable[[httpx.Client], None]]:
    """One job per report: enrol every device, then seq 1..N each, interleaved across devices."""
    devices = [collector.enrol(hardware_id=f"bench-hw-{n:04d}", hostname=f"bench-{n}") for n in range(DEVICES)]

    def post(device: dict[str, object], seq: int) -> Callable[[httpx.Client], None]:
        body = gzip.compress(json.dumps(report_for(str(device["device_id"]), seq=seq)).encode())
        headers = {"Authorization": f"Bearer {device['token']}", "Content-Encoding": "gzip",
                   "Content-Type": "application/json"}

        def send(client: httpx.Client) -> None:
            answer = client.post(f"{collector.url}/api/v1/reports", content=body, headers=headers)
            if answer.status_code // 100 != 2:
                raise RuntimeError(f"report refused: {answer.status_code} {answer.text}")
        return send

    # seq order per device matters (a device's reports arrive in order), so a device lives on one thread
    by_device = [[post(device, seq) for seq in range(1, REPORTS_PER_DEVICE + 1)] for device in devices]
    per_thread: list[list[Callable[[httpx.Client], None]]] = [[] for _ in range(CLIENTS)]
    for n, jobs in enumerate(by_device):
        per_thread[n % CLIENTS].extend(jobs)
    return [job for i in range(max(map(len, per_thread))) for share in per_thread
            for job in share[i:i + 1]]


def health_jobs(collector: RunningCollector, count: int) -> list[Callable[[httpx.Client], None]]:
    def ask(client: httpx.Client) -> None:
        client.get(f"{collector.url}/healthz").raise_for_status()
    return [ask] * count


def stored_reports(database_url: str) -> tuple[int, int]:
    """(rows, distinct device/seq pairs) in the reports table, counted with SQLAlchemy Core."""
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as db:
            rows = db.execute(sqlalchemy.text("SELECT count(*) FROM reports")).scalar_one()
            distinct = db.execute(sqlalchemy.text(
                "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM reports) AS pairs")).scalar_one()
    finally:
        engine.dispose()
    return int(rows), int(distinct)


def measure(label: str, collector: RunningCollector) -> bool:
    jobs = report_jobs(collector)
    floor_seconds, _ = timed_requests(health_jobs(collector, len(jobs)))
    seconds, latencies = timed_requests(jobs)
    rows, distinct = stored_reports(collector.db_url)
    rate, floor_rate = len(jobs) / seconds, len(jobs) / floor_seconds
    quantiles = statistics.quantiles(latencies, n=20)
    print(f"{label}: {len(jobs):,} gzip reports from {DEVICES} devices over {CLIENTS} connections")
    print(f"  ingest      {rate:7.0f} reports/s   p50 {quantiles[9] * 1000:5.1f} ms   p95 {quantiles[18] * 1000:5.1f} ms")
    print(f"  baseline    {floor_rate:7.0f} /healthz/s   (ingest runs at {rate / floor_rate:.2f}x the HTTP floor)")
    print(f"  carries     {rate * AGENT_INTERVAL_SECONDS:9,.0f} laptops reporting every {AGENT_INTERVAL_SECONDS} s")
    print(f"  stored      {rows:,} rows, {distinct:,} distinct device/seq", flush=True)
    return rows == distinct == len(jobs)


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL URL, or None (after saying why) when this machine cannot start one."""
    why = postgres_server.unavailable()
    if why:
        print(f"postgresql: not measured ({why})")
        yield None
        return
    server = postgres_server.PostgresServer(free_port())
    try:
        yield server.start()
    finally:
        server.stop()


def main() -> int:
    complete = True
    with tempfile.TemporaryDirectory(prefix="farmwatch-ingest-") as folder:
        collector = launch_collector(Path(folder) / "sqlite")
        try:
            complete &= measure("sqlite (embedded default)", collector)
        finally:
            collector.stop()
        with postgres_database() as url:
            if url:
                collector = launch_collector(Path(folder) / "postgres", database=url)
                try:
                    complete &= measure("postgresql (test cluster, fsync=off: an upper bound)", collector)
                finally:
                    collector.stop()
    if not complete:
        print("the store does not hold every acknowledged report exactly once", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
