"""``make demo``: a collector on a throwaway database holding a simulated company, with the console.

``farmwatch-simulate`` writes a seeded fleet (legitimate laptops with real-world confounders, and
laptop farms); this script moves its timestamps forward by whole days so the newest record is less
than a day old (hours of the day, and so working-hour patterns, are kept), stores the records, the
roster and the anchors straight into a fresh database (the simulated records carry the egress IPs
and geo the simulator gave them, which sending them through ingest from 127.0.0.1 would lose),
creates an analyst account and starts a real ``farmwatch-collector serve`` whose first scoring run
comes within seconds. The console shows a banner saying the data are simulated.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from devrun import die_with_parent  # deploy/dev/devrun.py, beside this script
from farmwatch.collector.console.accounts import Accounts
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import devices, reports
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.times import parse_utc

BANNER = "Simulated company (farmwatch-simulate, make demo): no real person or laptop is shown"
DEMO_ANALYST = "demo"


def shifted(records: Iterator[dict[str, Any]], days: int) -> Iterator[dict[str, Any]]:
    """The records with every timestamp moved forward by ``days`` days."""
    delta = timedelta(days=days)

    def move(text: str | None) -> str | None:
        return None if text is None else (parse_utc(text) + delta).isoformat().replace("+00:00", "Z")

    for record in records:
        report = record["report"]
        record["received_at"] = move(record["received_at"])
        report["window_start"], report["window_end"] = move(report["window_start"]), move(report["window_end"])
        if report.get("host"):
            report["host"]["boot_time"] = move(report["host"].get("boot_time"))
        for tool in report.get("remote_access") or []:
            tool["started_at"] = move(tool.get("started_at"))
        yield record


def days_to_now(records_file: Path, now: datetime) -> int:
    """Whole days that bring the newest record within the day before ``now``."""
    newest = max(orjson.loads(line)["received_at"] for line in records_file.open("rb") if line.strip())
    return max((now - parse_utc(newest)) // timedelta(days=1), 0)


def load_fleet(storage: Storage, fleet: Path, now: datetime) -> int:
    """Store a ``farmwatch-simulate`` folder (records shifted to ``now``, roster, anchors); returns the record count.

    Devices enrol through :meth:`Storage.enrol`; the records go in with one bulk insert, because
    :meth:`Storage.add_report` (one transaction per report, as ingest needs) takes minutes for a
    company's 30,000 records on a busy disk."""
    storage.replace_roster(load_roster(fleet / "roster.csv"))
    storage.replace_anchors(load_anchors(fleet / "anchors.csv"))
    days = days_to_now(fleet / "records.jsonl", now)
    lines = (orjson.loads(line) for line in (fleet / "records.jsonl").open("rb") if line.strip())
    rows: list[dict[str, Any]] = []
    newest: dict[str, dict[str, Any]] = {}
    taken: set[tuple[str, int]] = set()
    for record in shifted(lines, days):
        report = record["report"]
        device = report["device_id"]
        if device not in newest:
            storage.enrol(hardware_id=f"simulated:{device}", hostname=report["agent"]["hostname"],
                          source_ip=record["source_ip"], new_device_id=device, token=secrets.token_urlsafe(16),
                          now=parse_utc(record["received_at"]))
        if (device, report["seq"]) in taken:  # an agent whose sequence restarted: ingest keeps the first, too
            continue
        taken.add((device, report["seq"]))
        received = parse_utc(record["received_at"])
        newest[device] = {"last_seen": received, "last_seq": max(report["seq"], newest.get(device, {}).get("last_seq", 0))}
        rows.append({"device_id": device, "seq": report["seq"], "received_at": received, "record": orjson.dumps(record).decode(),
                     "digest": hashlib.sha256(orjson.dumps(report, option=orjson.OPT_SORT_KEYS)).hexdigest()})
    with storage.engine.execution_options(write=True).begin() as tx:
        tx.execute(reports.insert(), rows)
        for device, seen in newest.items():
            top = tx.execute(sa.select(sa.func.max(reports.c.id)).where(reports.c.device_id == device)).scalar_one()
            tx.execute(devices.update().where(devices.c.device_id == device).values(last_report_id=top, **seen))
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python deploy/dev/demo.py",
        description="Start a collector on a throwaway SQLite database filled with a simulated company "
        "(what `make demo` does) and print the console's address and a sign-in. Ctrl-C stops it and "
        "deletes the database.")
    parser.add_argument("--port", type=int, default=8766, help="collector port (default: 8766)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default: 7)")
    parser.add_argument("--legit", type=int, default=60, help="legitimate laptops (default: 60)")
    parser.add_argument("--farms", type=int, default=16, help="farm laptops (default: 16)")
    parser.add_argument("--days", type=int, default=3, help="days simulated (default: 3)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="farmwatch-demo-"))
    stop = [False]

    def _set(_signum: int, _frame: FrameType | None) -> None:
        stop[0] = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _set)
    try:
        return _run(folder, args, stop)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepare(folder: Path, seed: int, legit: int, farms: int, days: int) -> tuple[str, str]:
    """Simulate the company into ``folder``, store it in a fresh database and make the demo analyst;
    returns (database URL, the analyst's password)."""
    now = datetime.now(timezone.utc)
    fleet = write_fleet(folder / "fleet", seed, legit, farms, days)
    db_url = f"sqlite:///{folder / 'demo.db'}"
    storage = Storage.open(db_url)
    password = secrets.token_urlsafe(12)
    try:
        count = load_fleet(storage, folder / "fleet", now)
        Accounts(storage.engine).add(DEMO_ANALYST, password, now)
    finally:
        storage.close()
    print(f"stored {count} of {fleet.count} simulated records", flush=True)
    return db_url, password


def serve(folder: Path, db_url: str, port: int) -> subprocess.Popen[bytes]:
    """A real ``farmwatch-collector serve`` on the demo database (log in ``folder``); RuntimeError with
    its log when it does not come up."""
    for name in ("enroll-secret", "analyst-token"):
        (folder / name).write_text(secrets.token_urlsafe(32) + "\n")
    config = folder / "collector.toml"
    config.write_text(f'[detection]\ninterval_seconds = 5\n\n[console]\nbanner = "{BANNER}"\n')
    with open(folder / "collector.log", "wb") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "farmwatch.collector.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--db", db_url, "--config", str(config), "--enroll-secret-file", str(folder / "enroll-secret"),
             "--analyst-token-file", str(folder / "analyst-token"), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent)  # a demo killed outright (SIGKILL) takes its collector with it
    if not _healthy(f"http://127.0.0.1:{port}", collector):
        stop(collector)
        raise RuntimeError(f"the collector did not start:\n{(folder / 'collector.log').read_text()}")
    return collector


def stop(collector: subprocess.Popen[bytes]) -> None:
    if collector.poll() is None:
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=15)


def _run(folder: Path, args: argparse.Namespace, stop_flag: list[bool]) -> int:
    print(f"simulating {args.legit} legitimate and {args.farms} farm laptops over {args.days} days ...", flush=True)
    db_url, password = prepare(folder, args.seed, args.legit, args.farms, args.days)
    try:
        collector = serve(folder, db_url, args.port)
    except RuntimeError as failure:
        print(f"demo: {failure}", file=sys.stderr)
        return 1
    try:
        print(f"""
farmwatch demo (simulated company; Ctrl-C stops it and deletes {folder})

  console   http://127.0.0.1:{args.port}/console/
  sign in   name {DEMO_ANALYST}   password {password}

The first verdicts appear within a minute, farms first.
""", flush=True)
        while not stop_flag[0] and collector.poll() is None:
            time.sleep(0.5)
        return 0 if collector.poll() is None else 1
    finally:
        stop(collector)


def _healthy(url: str, collector: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and collector.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    sys.exit(main())
