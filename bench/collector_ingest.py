"""How many reports a second the collector stores, against a server that only parses them (issue 13).

Real ``farmwatch-collector serve`` processes on loopback; DEVICES devices enrol over HTTP, then the
load generator (this process: asyncio, keep-alive connections, requests prepared beforehand so it
spends little CPU) posts realistic gzip reports (the tests' fixture report, ~2.2 KB, ~1.1 KB gzip,
each device counting its own seq, one device's reports in order on one connection):

- **rate**: as fast as the collector answers, CONNECTIONS connections;
- **p99 at a fixed rate**: FIXED_RATE reports a second for FIXED_SECONDS, latency counted from when
  each request was due (a slow answer delays the ones queued behind it, and that counts);
- **baseline**: the same requests to bench/_parse_and_discard.py, the same HTTP stack (FastAPI on
  uvicorn, same process count) reading, gunzipping and strictly parsing each report and keeping
  nothing: the ratio is what storing costs on top of receiving;
- **exactly once**: afterwards the store is counted: every acknowledged (202) report must be there
  once, and nothing unacknowledged;
- **CPU per report**: user + system CPU of the collector processes (and their children: serve's
  report writer and reducer processes) over the rate phase, beside the parse-and-discard server's over its own: less
  sensitive than rates to whatever else shares the machine's cores; and again once the reducer has
  filed every report of the phase into rollups (it works behind ingest), with how long that took;
- **load generator CPU per report**: this process's own CPU over the rate phase, since it shares the
  cores with the servers (the same generator drives the parse-and-discard baseline);
- **where the CPU goes** (rate phase, per report): the collectors' event-loop threads, their other
  threads (/proc/<pid>/task: the thread pool's), their report writer children (writer_process.py),
  their reducer children and, on
  PostgreSQL, the server's own processes (postmaster and every backend, those that ended too). Then
  what 0.5x parse-and-discard would leave the collector: at half the baseline's rate, this machine's
  cores give ``cores / rate`` CPU seconds per report, less PostgreSQL's and the load generator's
  (an upper bound: it counts every core as free for the benchmark).

SQLite: one collector process (one writer, its writer child; synchronous=FULL, a batch a commit). PostgreSQL (when this
machine can start a throwaway cluster: root and the server binaries; fsync=off there, so an upper
bound): REPLICAS collectors on the one database, the supported scale-out, connections spread over
them as a balancer would. Load generator, collectors and database share this machine's cores, so
the figures are a floor for a dedicated collector host.

``--store`` measures one store only (both by default); ``--statements`` starts PostgreSQL with
pg_stat_statements and prints, per statement, what it cost per stored report over the rate phase and
the reducer's catch-up (calls, time, rows, blocks dirtied and written, WAL bytes), and each
table's inserts, updates (HOT ones apart) and scans; ``FARMWATCH_BENCH_QUICK=1`` shrinks the run to
show that it still works (bench/report.py).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import sqlalchemy

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS / "fixtures"))
sys.path.insert(0, str(TESTS / "collector"))
sys.path.insert(0, str(HERE))
from collector_helpers import report_for  # noqa: E402  (the tests' valid fixture report)
from collector_process import DEFAULT_CONFIG, RunningCollector, free_port, launch_collector  # noqa: E402
import postgres_server  # noqa: E402
from report import Figure, at_least, at_most, publish, quick  # noqa: E402

DEVICES = 60 if quick() else 1_000
REPORTS_PER_DEVICE = 2 if quick() else 10
CONNECTIONS = 32
FIXED_RATE = 500  # reports/s
FIXED_SECONDS = 1 if quick() else 10
REPLICAS = 2  # PostgreSQL collectors sharing the database
AGENT_INTERVAL_SECONDS = 300
CONFIG = DEFAULT_CONFIG + "\n[limits]\nenrolments_per_address_per_minute = 100000\n"  # DEVICES enrol from 127.0.0.1


@dataclass
class Outcome:
    """Answers of one load phase: per-request seconds, statuses, wall time."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, status: int, began: float) -> None:
        self.latencies.append(time.perf_counter() - began)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def quantile(self, q: float) -> float:
        """Seconds below which ``q`` of the requests were answered."""
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]


class Wire:
    """One keep-alive HTTP/1.1 connection sending prepared requests and reading only status and body length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Wire:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Device:
    device_id: str
    token: str


def request(port: int, device: Device, seq: int, ends: datetime) -> bytes:
    """A prepared POST /api/v1/reports of ``device``'s report ``seq`` for the 5 minutes before ``ends``."""
    report = report_for(device.device_id, seq=seq, window_start=wire_time(ends - timedelta(minutes=5)),
                        window_end=wire_time(ends))
    body = gzip.compress(json.dumps(report).encode())
    head = (f"POST /api/v1/reports HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {device.token}\r\n"
            f"Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def wire_time(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def as_fast_as_answered(ports: list[int], queues: list[list[bytes]]) -> Outcome:
    """Each queue on its own connection (spread over ``ports``), the next request once the last is answered."""
    outcome = Outcome()

    async def drain(port: int, queue: list[bytes]) -> None:
        wire = await Wire.open(port)
        try:
            for prepared in queue:
                began = time.perf_counter()
                outcome.count(await wire.exchange(prepared), began)
        finally:
            wire.close()

    began = time.perf_counter()
    await asyncio.gather(*(drain(ports[n % len(ports)], queue) for n, queue in enumerate(queues)))
    outcome.seconds = time.perf_counter() - began
    return outcome


async def at_fixed_rate(ports: list[int], requests: list[bytes], rate: float) -> Outcome:
    """Send ``requests`` at ``rate`` a second over idle connections; latency counts from when each was due."""
    outcome = Outcome()
    idle: asyncio.Queue[Wire] = asyncio.Queue()
    for n in range(CONNECTIONS):
        idle.put_nowait(await Wire.open(ports[n % len(ports)]))

    async def send(prepared: bytes, due: float) -> None:
        wire = await idle.get()
        try:
            outcome.count(await wire.exchange(prepared), due)
        finally:
            idle.put_nowait(wire)

    began = time.perf_counter()
    sending = []
    for n, prepared in enumerate(requests):
        due = began + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sending.append(asyncio.ensure_future(send(prepared, due)))
    await asyncio.gather(*sending)
    outcome.seconds = time.perf_counter() - began
    while not idle.empty():
        idle.get_nowait().close()
    return outcome


def enrol(collector: RunningCollector) -> list[Device]:
    with httpx.Client(timeout=60) as client:
        answers = [client.post(f"{collector.url}/api/v1/enroll", json={
            "enroll_secret": collector.enroll_secret, "hostname": f"bench-{n}", "hardware_id": f"bench-hw-{n:05d}"})
            for n in range(DEVICES)]
    return [Device(answer.raise_for_status().json()["device_id"], answer.json()["token"]) for answer in answers]


def per_connection(port: int, devices: list[Device], seqs: range, now: datetime) -> list[list[bytes]]:
    """CONNECTIONS queues: each device's reports in seq order on one connection, devices interleaved."""
    queues: list[list[bytes]] = [[] for _ in range(CONNECTIONS)]
    for seq in seqs:
        for n, device in enumerate(devices):
            queues[n % CONNECTIONS].append(request(port, device, seq, now - (seqs.stop - seq) * timedelta(minutes=5)))
    return queues


def stored_reports(database_url: str) -> tuple[int, int]:
    """(rows, distinct device/seq pairs) in the reports table, counted with SQLAlchemy Core."""
    engine = sqlalchemy.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as db:
            rows = db.execute(sqlalchemy.text("SELECT count(*) FROM reports")).scalar_one()
            distinct = db.execute(sqlalchemy.text(
                "SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM reports) AS pairs")).scalar_one()
    finally:
        engine.dispose()
    return int(rows), int(distinct)


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds so far of the collector processes, by part, and of the PostgreSQL server (0 on SQLite)."""

    event_loops: float
    other_threads: float
    writers: float
    children: float
    database: float

    def __sub__(self, other: CpuSplit) -> CpuSplit:
        return CpuSplit(self.event_loops - other.event_loops, self.other_threads - other.other_threads,
                        self.writers - other.writers, self.children - other.children, self.database - other.database)

    @property
    def collectors(self) -> float:
        """The collector processes' own and their children's (PostgreSQL's backends not included)."""
        return self.event_loops + self.other_threads + self.writers + self.children


def main_thread_seconds(pid: int) -> float:
    """User + system CPU of the process's main thread (its event loop) from /proc/<pid>/task/<pid>/stat."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def postgres_seconds(postmaster: int | None) -> float:
    """User + system CPU of the PostgreSQL server: the postmaster, its live children (backends,
    walwriter, autovacuum ...) and those it has reaped (backends that ended)."""
    if postmaster is None:
        return 0.0
    process = psutil.Process(postmaster)
    own = process.cpu_times()
    total = own.user + own.system + own.children_user + own.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # ended meanwhile: counted in the postmaster's children_* next time
            continue
        total += times.user + times.system
    return total


def cpu_split(pids: list[int], postmaster: int | None) -> CpuSplit:
    """Where the collectors' (and the database server's) CPU went so far."""
    loops = others = writers = children = 0.0
    for pid in pids:
        process = psutil.Process(pid)
        times = process.cpu_times()
        loop = main_thread_seconds(pid)
        loops += loop
        others += times.user + times.system - loop
        for child in process.children(recursive=True):
            if child.name() == "fw-writer":  # serve's report writer (writer_process.py names it)
                writers += sum(child.cpu_times()[:2])
            else:
                children += sum(child.cpu_times()[:2])
    return CpuSplit(loops, others, writers, children, postgres_seconds(postmaster))


def server_cpu(pids: list[int], postmaster: int | None,
               phase: Coroutine[Any, Any, Outcome]) -> tuple[Outcome, CpuSplit]:
    """Run ``phase``; its outcome and where the servers' CPU went meanwhile."""
    before = cpu_split(pids, postmaster)
    outcome = asyncio.run(phase)
    return outcome, cpu_split(pids, postmaster) - before


def filed_reports(database_url: str) -> int:
    """Reports the reducer has filed into rollups so far (each rollup row counts its windows)."""
    engine = sqlalchemy.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as db:
            return int(db.execute(sqlalchemy.text("SELECT coalesce(sum(reports), 0) FROM rollups")).scalar_one())
    finally:
        engine.dispose()


def until_reduced(database_url: str, stored: int, timeout: float = 300.0) -> float:
    """Seconds until the reducer has filed ``stored`` reports (``timeout`` when it has not by then)."""
    began = time.perf_counter()
    while filed_reports(database_url) < stored and time.perf_counter() - began < timeout:
        time.sleep(0.25)
    return time.perf_counter() - began


@contextmanager
def parse_and_discard(workers: int) -> Iterator[tuple[int, int]]:
    """The baseline server on a free port (its own process group, ended afterwards): (port, pid)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(HERE / "_parse_and_discard.py"), "--port", str(port),
                               "--workers", str(workers)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield port, server.pid
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


STATEMENT_COSTS = """SELECT calls, total_exec_time, rows, shared_blks_hit, shared_blks_dirtied, shared_blks_written,
wal_bytes, query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC"""


TABLE_WRITES = """SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, idx_scan
FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY n_tup_ins + n_tup_upd DESC"""


def reset_statements(database_url: str) -> None:
    """Forget what pg_stat_statements counted so far (the extension created on first use)."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        connection.execute("SELECT pg_stat_statements_reset()")
        connection.execute("SELECT pg_stat_reset()")


def print_statements(database_url: str, stored: int) -> None:
    """Each statement's cost since :func:`reset_statements`, per stored report, costliest first."""
    # An idle backend sends its table counts within PGSTAT_IDLE_INTERVAL, 10 s (PostgreSQL 15, src/backend/utils/activity/pgstat.c).
    time.sleep(11)
    with psycopg.connect(database_url, autocommit=True) as connection:
        rows = connection.execute(STATEMENT_COSTS).fetchall()
        tables = connection.execute(TABLE_WRITES).fetchall()
    total = sum(row[1] for row in rows)
    print(f"pg_stat_statements per stored report ({stored:,} stored; {total / stored * 1000:.0f} us of execution in all):")
    print(f"{'calls':>7} {'exec us':>8} {'rows':>7} {'hit':>7} {'dirtied':>8} {'written':>8} {'WAL B':>8}  statement")
    for calls, ms, found, hit, dirtied, written, wal, query in rows[:25]:
        print(f"{calls / stored:7.3f} {ms / stored * 1000:8.1f} {found / stored:7.2f} {hit / stored:7.2f} "
              f"{dirtied / stored:8.3f} {written / stored:8.3f} {float(wal) / stored:8.0f}  {' '.join(query.split())[:160]}")
    print("tables per stored report (pg_stat_user_tables):")
    print(f"{'inserts':>8} {'updates':>8} {'HOT':>8} {'deletes':>8} {'seq scans':>10} {'idx scans':>10}  table")
    for name, inserted, updated, hot, deleted, seq_scans, idx_scans in tables:
        print(f"{inserted / stored:8.3f} {updated / stored:8.3f} {hot / stored:8.3f} {deleted / stored:8.3f} "
              f"{seq_scans / stored:10.3f} {(idx_scans or 0) / stored:10.3f}  {name}")


def measure(store: str, collectors: list[RunningCollector], postmaster: int | None = None,
            statements: bool = False) -> list[Figure]:
    """Every figure of one store: rate beside the parse-and-discard rate, p99 at FIXED_RATE, exactly once;
    ``postmaster``: the PostgreSQL server's pid, whose CPU is counted beside the collectors';
    ``statements``: print pg_stat_statements' figures of the rate phase and the reducer's catch-up."""
    devices = enrol(collectors[0])
    ports = [collector.port for collector in collectors]
    now = datetime.now(timezone.utc)
    loaded = per_connection(ports[0], devices, range(1, REPORTS_PER_DEVICE + 1), now)
    fixed_seqs = range(REPORTS_PER_DEVICE + 1, REPORTS_PER_DEVICE + 1 + -(-FIXED_RATE * FIXED_SECONDS // DEVICES))
    fixed = [request(ports[0], device, seq, now) for seq in fixed_seqs for device in devices][:FIXED_RATE * FIXED_SECONDS]
    pids = [collector.process.pid for collector in collectors if collector.process is not None]
    if statements:
        reset_statements(collectors[0].db_url)
    before = cpu_split(pids, postmaster)
    generator_before = time.process_time()
    rate_run, split = server_cpu(pids, postmaster, as_fast_as_answered(ports, loaded))
    per_report = 1e6 / rate_run.answered
    generator_cpu = (time.process_time() - generator_before) * per_report
    cpu = split.collectors * per_report
    # The reducer files stored reports into rollups behind ingest: its share is counted once it caught up.
    catch_up = until_reduced(collectors[0].db_url, stored_reports(collectors[0].db_url)[0])
    if statements:
        print_statements(collectors[0].db_url, stored_reports(collectors[0].db_url)[0])
    cpu_reduced = (cpu_split(pids, postmaster) - before).collectors * per_report
    fixed_run = asyncio.run(at_fixed_rate(ports, fixed, FIXED_RATE))
    with parse_and_discard(len(collectors)) as (port, pid):
        floor_run, floor_split = server_cpu([pid], None, as_fast_as_answered([port], loaded))
    floor_cpu = floor_split.collectors / floor_run.answered * 1e6
    rows, distinct = stored_reports(collectors[0].db_url)
    acknowledged = rate_run.statuses.get(202, 0) + fixed_run.statuses.get(202, 0)
    sent = rate_run.answered + fixed_run.answered
    rate, floor = rate_run.answered / rate_run.seconds, floor_run.answered / floor_run.seconds
    print(f"{store}: {rate_run.answered:,} reports from {len(devices):,} devices over {CONNECTIONS} connections "
          f"in {rate_run.seconds:.1f} s, answers {rate_run.statuses}; then {fixed_run.answered:,} at {FIXED_RATE}/s, "
          f"answers {fixed_run.statuses}; parse-and-discard answers {floor_run.statuses}; stored {rows:,} rows, "
          f"{distinct:,} distinct device/seq of {acknowledged:,} acknowledged", flush=True)
    discard = "parse-and-discard server, same stack, same run"
    missing = (sent - acknowledged) + abs(rows - acknowledged) + (rows - distinct)
    cores = len(os.sched_getaffinity(0))
    # At half the baseline's rate every core's second buys cores / (0.5 * floor) CPU seconds per report.
    left = cores * 1e6 / (0.5 * floor) - split.database * per_report - generator_cpu
    database = [
        Figure(f"postgresql server CPU per report, {store}", split.database * per_report, "us", cpu,
               "collector CPU per report"),
        Figure(f"CPU per report left for the collector at 0.5x parse-and-discard on {cores} cores, {store}", left,
               "us", cpu, "collector CPU per report"),
    ] if postmaster is not None else []
    return [
        Figure(f"ingest rate, {store}", rate, "reports/s", floor, discard, at_least(1_500 if store == "sqlite" else 1_000)),
        Figure(f"ingest rate / parse-and-discard, {store}", rate, "reports/s", floor, discard, at_least(0.5, ratio=True)),
        Figure(f"p99 latency at {FIXED_RATE} reports/s, {store}", fixed_run.quantile(0.99) * 1000, "ms",
               target=at_most(100)),
        Figure(f"p50 latency at full rate, {store}", rate_run.quantile(0.5) * 1000, "ms"),
        Figure(f"p99 latency at full rate, {store}", rate_run.quantile(0.99) * 1000, "ms"),
        Figure(f"reports not acknowledged or not stored exactly once, {store}", missing, "reports", target=at_most(0)),
        Figure(f"collector CPU per report, {store}", cpu, "us", floor_cpu, "parse-and-discard server's CPU per report"),
        Figure(f"collector CPU per report with the reducer caught up, {store}", cpu_reduced, "us", floor_cpu,
               "parse-and-discard server's CPU per report"),
        Figure(f"reducer catching up after the rate phase, {store}", catch_up, "s"),
        Figure(f"load generator CPU per report (this process, same cores), {store}", generator_cpu, "us", cpu,
               "collector CPU per report"),
        Figure(f"laptops carried at a {AGENT_INTERVAL_SECONDS} s interval, {store}", rate * AGENT_INTERVAL_SECONDS,
               "laptops"),
        Figure(f"collector event-loop threads' CPU per report, {store}", split.event_loops * per_report, "us"),
        Figure(f"collector other threads' CPU per report, {store}", split.other_threads * per_report, "us"),
        Figure(f"report writer processes' CPU per report, {store}", split.writers * per_report, "us"),
        Figure(f"reducer processes' CPU per report during the rate phase, {store}", split.children * per_report, "us"),
        *database,
    ]


@contextmanager
def postgres_database(statements: bool) -> Iterator[tuple[str, int] | None]:
    """A throwaway PostgreSQL cluster: (URL, postmaster pid), or None (after saying why) when this
    machine cannot start one; ``statements``: with pg_stat_statements loaded."""
    why = postgres_server.unavailable()
    if why:
        print(f"postgresql: not measured ({why})")
        yield None
        return
    server = postgres_server.PostgresServer(free_port())
    try:
        url = server.start(("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")
                           if statements else ())
        yield url, int((server.data / "postmaster.pid").read_text().split()[0])
    finally:
        server.stop()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both",
                        help="which store to measure (default: both; PostgreSQL needs root and its server binaries)")
    parser.add_argument("--statements", action="store_true",
                        help="PostgreSQL: print pg_stat_statements' cost per stored report of each statement")
    options = parser.parse_args()
    if options.statements and options.store == "sqlite":
        parser.error("--statements: PostgreSQL's statement costs; measure it with --store postgresql or both")
    return options


def main() -> int:
    options = arguments()
    store = options.store
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="farmwatch-ingest-") as folder:
        if store in ("sqlite", "both"):
            collector = launch_collector(Path(folder) / "sqlite", CONFIG)
            try:
                figures += measure("sqlite", [collector])
            finally:
                collector.stop()
        with postgres_database(options.statements) if store in ("postgresql", "both") else nullcontext() as cluster:
            if cluster:
                url, postmaster = cluster
                replicas: list[RunningCollector] = []
                try:
                    for n in range(REPLICAS):
                        replicas.append(launch_collector(Path(folder) / f"postgres-{n}", CONFIG, database=url))
                    figures += measure(f"postgresql, {REPLICAS} replicas (fsync=off)", replicas, postmaster,
                                       options.statements)
                finally:
                    for replica in replicas:
                        replica.stop()
    publish(figures)
    whole = all(f.met is not False for f in figures if f.figure.startswith("reports not acknowledged"))
    if not whole:
        print("the store does not hold every acknowledged report exactly once", file=sys.stderr)
    return 0 if whole else 1


if __name__ == "__main__":
    raise SystemExit(main())
