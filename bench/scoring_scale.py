"""Scoring at company scale (issue 12): one interval of 20,000 simulated laptops, against today's full re-read.

Setup, not timed: a simulated company (farmwatch.simulator: 85 % employees of every kind, 15 % farm
laptops) reporting every 5 minutes while awake; its 72 hours of reports up to a weekday noon in the
US are stored straight into a SQLite collector store (bulk insert, no HTTP:
farmwatch.simulator.store.load_records), reduced into rollups and sightings by the collector's own
reducer, and the fleet baselines are learned (the hourly job, timed and printed for information).
Then the next 5 minutes' reports are stored.

Measured, each in a fresh process (``python bench/scoring_scale.py --measure ...``) so its peak RSS
is its own:

* **incremental**: one interval's work of a replica, ``Scorer.run``: reduce the new reports, mark the
  devices whose rollups or sightings changed, claim them in batches of ``[detection] batch_devices``,
  score each batch from rollups (with its co-location neighbourhood and the stored baselines), store
  the verdicts and release the claims. Target: at most 60 s and 1 GB.
* **baseline, today's full re-read**: ``pipeline.score`` over every stored report of the 72 h window and
  the verdicts stored, as the single leased scorer did before issue 12. At 20,000 laptops that needs
  far more memory than this machine has, so it is measured at 1,000 and 2,000 laptops in the same
  run and extrapolated to the full fleet (time: the average seconds per report; memory: the line
  through the two sizes); the printed baseline says so.

Without verdict listeners: alerts are decided in the verdicts' transaction in a collector, which this
leaves out. ``--quick`` (``run_all.py --quick``): 30 laptops, 2 hours, baselines at 10 and 20 laptops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from report import QUICK_ENV, Figure, at_most, publish, quick

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import refresh_baselines
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.rollups import catch_up, changed_devices
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import devices, reports, scoring_work
from farmwatch.contract import Anchor, RosterEntry
from farmwatch.detectors.pipeline import score
from farmwatch.simulator.fleet import make_fleet
from farmwatch.simulator.places import ANCHORS
from farmwatch.simulator.records import START, Simulator
from farmwatch.simulator.store import load_records

SEED = 12
INTERVAL = timedelta(minutes=5)
NOON_THURSDAY = START + timedelta(days=3, hours=18)  # 12:00 in Chicago: most laptops are awake
TARGET_SECONDS, TARGET_GB = 60.0, 1.0


@dataclass(frozen=True)
class Store:
    url: str
    laptops: int
    records: int  # reports in the lookback window
    new: int  # reports of the measured interval
    now: datetime


def config(hours: int) -> CollectorConfig:
    return CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=hours,
                           detection_interval_seconds=INTERVAL.total_seconds())


def _records(laptops: int, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """The fleet's records received in (start, end], device by device (each in time order)."""
    fleet = make_fleet(SEED, laptops - laptops * 15 // 100, laptops * 15 // 100, days=4)
    simulator = Simulator(SEED, days=4)
    for index, device in enumerate(fleet):
        for record in simulator.records(device, index):
            received = datetime.fromisoformat(record["received_at"].replace("Z", "+00:00"))
            if start < received <= end:
                yield record


def _roster(laptops: int) -> list[RosterEntry]:
    return [RosterEntry(device_id=d.device_id, employee_id=d.employee_id, country=d.claimed.country,
                        city=d.claimed.name, latitude=d.claimed.latitude, longitude=d.claimed.longitude,
                        timezone=d.claimed.timezone, approved_tools=list(d.approved_tools))
            for d in make_fleet(SEED, laptops - laptops * 15 // 100, laptops * 15 // 100, days=4)]


def _seen(storage: Storage) -> None:
    """Each device's newest report, as ingest leaves it on the device row (staleness reads it)."""
    newest = sa.select(sa.func.max(reports.c.id)).where(reports.c.device_id == devices.c.device_id).scalar_subquery()
    when = sa.select(sa.func.max(reports.c.received_at)).where(reports.c.device_id == devices.c.device_id)
    with storage._writer.begin() as tx:
        tx.execute(devices.update().values(last_report_id=newest, last_seen=when.scalar_subquery()))


def build(folder: Path, laptops: int, hours: int) -> Store:
    """A store holding ``hours`` of the fleet's reports up to NOON_THURSDAY, reduced, baselines learned
    and nothing left to score; then the next interval's reports stored (not yet reduced)."""
    now = NOON_THURSDAY + INTERVAL
    url = f"sqlite:///{folder / f'{laptops}-laptops.db'}"
    storage = Storage.open(url)
    began = time.perf_counter()
    stored = load_records(storage, _records(laptops, NOON_THURSDAY - timedelta(hours=hours), NOON_THURSDAY))
    storage.replace_roster(_roster(laptops))
    storage.replace_anchors([Anchor(name=a[0], address=a[1], port=a[2], latitude=a[3], longitude=a[4]) for a in ANCHORS])
    _seen(storage)
    loaded = time.perf_counter()
    catch_up(storage, NOON_THURSDAY)
    reduced = time.perf_counter()
    # Steady state: every change so far has been scored, so the next run sees only the interval's.
    storage.mark_changed(lambda since: changed_devices(storage, since), NOON_THURSDAY)
    with storage._writer.begin() as tx:
        tx.execute(scoring_work.delete())
    new = load_records(storage, _records(laptops, NOON_THURSDAY, now))
    _seen(storage)
    storage.close()
    print(f"{laptops:,} laptops: {stored:,} reports over {hours} h stored in {loaded - began:.0f} s, reduced into "
          f"rollups in {reduced - loaded:.0f} s; {new:,} reports in the next {INTERVAL.seconds // 60} minutes",
          flush=True)
    return Store(url, laptops, stored, new, now)


def measure(kind: str, store: Store, hours: int) -> dict[str, Any]:
    """Run one measurement in a fresh process: its answer, seconds and peak RSS (GB)."""
    command = [sys.executable, __file__, "--measure", kind, "--db", store.url, "--now", store.now.isoformat(),
               "--hours", str(hours)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert child.stdout is not None
    answer = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed (status {status})")
    done = {**json.loads(answer), "gb": usage.ru_maxrss / 2**20}
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())  # a shared machine: say how busy it was
    print(f"  {kind} at {store.laptops:,} laptops: {done['seconds']:.1f} s, peak {done['gb']:.2f} GB "
          f"(load average {load})", flush=True)
    return done


def child(kind: str, url: str, now: datetime, hours: int) -> dict[str, Any]:
    """The measured work (in the child process)."""
    storage = Storage.open(url)
    settings = config(hours)
    began = time.perf_counter()
    if kind == "baselines":
        refresh_baselines(storage, now, settings)
        answer: dict[str, Any] = {}
    elif kind == "incremental":
        registry = CollectorRegistry()
        stored = Scorer(storage, settings, Metrics(registry, lambda: 0), lambda: now).run(bounded=True)
        answer = {"verdicts": stored, "devices": registry.get_sample_value("farmwatch_scoring_devices_total")}
    else:  # today's full re-read, as the leased scorer ran it
        through = storage.last_report_id()
        since = now - timedelta(hours=hours)
        verdicts = score(storage.records(since=since), storage.roster(), storage.anchors(), now,
                         settings.detection, storage.suppressed_detectors(now))
        storage.save_verdicts(verdicts, through)
        answer = {"verdicts": len(verdicts)}
    return {**answer, "seconds": time.perf_counter() - began}


def _drop(store: Store) -> None:
    Path(sa.make_url(store.url).database or "").unlink()


def per_report(points: list[tuple[float, float]], at: float) -> float:
    """``at`` reports times the measured points' average value per report (time: other work on the
    machine moves single runs too much for a slope between two of them to mean anything)."""
    return sum(value / reports for reports, value in points) / len(points) * at


def linear(points: list[tuple[float, float]], at: float) -> float:
    """The straight line through the first and last (reports, value) points, at ``at`` reports (memory:
    a fixed part, the interpreter and libraries, plus a part per report held)."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    return y1 + (y1 - y0) / (x1 - x0) * (at - x1)


def main(laptops: int) -> int:
    hours, sizes = (2, (10, 20)) if quick() else (72, (1_000, 2_000))
    laptops = 30 if quick() else laptops
    with tempfile.TemporaryDirectory(prefix="farmwatch-scoring-scale-", dir=os.environ.get("FARMWATCH_BENCH_DIR")) as tmp:
        folder = Path(tmp)
        full: list[tuple[int, dict[str, Any]]] = []
        small: list[tuple[Store, dict[str, Any]]] = []
        for size in sizes:
            store = build(folder, size, hours)
            full.append((store.records, measure("full", store, hours)))
            measure("baselines", store, hours)  # the hourly job, done before the interval (as at full size)
            small.append((store, measure("incremental", store, hours)))
            _drop(store)  # about 2 GB per 1,000 laptops: keep one store on disk at a time
        fleet = build(folder, laptops, hours)
        refreshed = measure("baselines", fleet, hours)
        interval = measure("incremental", fleet, hours)
    for (records, done), (store, incremental) in zip(full, small):
        print(f"{store.laptops:,} laptops, {records:,} reports: full re-read {done['seconds']:.1f} s, "
              f"peak {done['gb']:.2f} GB; one interval incremental ({incremental['devices']:.0f} devices) "
              f"{incremental['seconds']:.1f} s, peak {incremental['gb']:.2f} GB")
    seconds_line = [(float(records), done["seconds"]) for records, done in full]
    memory_line = [(float(records), done["gb"]) for records, done in full]
    full_seconds, full_gb = per_report(seconds_line, fleet.records), linear(memory_line, fleet.records)
    print(f"{laptops:,} laptops, {fleet.records:,} reports in {hours} h, {fleet.new:,} new in the interval: "
          f"{interval['devices']:.0f} devices scored, {interval['verdicts']} verdicts in {interval['seconds']:.1f} s, "
          f"peak {interval['gb']:.2f} GB (fleet baselines, hourly: {refreshed['seconds']:.1f} s, {refreshed['gb']:.2f} GB); "
          f"full re-read EXTRAPOLATED from {sizes[0]:,}/{sizes[-1]:,} laptops: {full_seconds:.0f} s, {full_gb:.1f} GB")
    if laptops < 20_000 and not quick():
        print(f"EXTRAPOLATED, not measured: one interval at 20,000 laptops, in proportion to the fleet from "
              f"{laptops:,}: {interval['seconds'] * 20_000 / laptops:.0f} s on one replica")
    extrapolated = f"today's full re-read, EXTRAPOLATED from {sizes[0]:,} and {sizes[-1]:,} laptops measured in this run"
    figures = [
        Figure(f"one interval's scoring, {laptops:,} laptops, {hours} h stored", interval["seconds"], "s",
               baseline=full_seconds, baseline_is=extrapolated, target=at_most(TARGET_SECONDS)),
        Figure(f"peak memory of one interval's scoring, {laptops:,} laptops", interval["gb"], "GB",
               baseline=full_gb, baseline_is=extrapolated, target=at_most(TARGET_GB)),
        Figure(f"fleet baselines refresh (hourly, one replica), {laptops:,} laptops", refreshed["seconds"], "s"),
    ]
    for (records, done), (store, incremental) in zip(full, small):
        figures.append(Figure(f"one interval's scoring, {store.laptops:,} laptops, {hours} h stored",
                              incremental["seconds"], "s", baseline=done["seconds"],
                              baseline_is=f"today's full re-read of {records:,} reports, measured"))
    publish(figures)
    return 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (what make bench's CI pass runs)")
    parser.add_argument("--laptops", type=int, default=20_000,
                        help="the fleet whose interval is measured (default 20,000; the baselines stay at 1,000 and 2,000)")
    parser.add_argument("--measure", choices=("full", "incremental", "baselines"),
                        help="internal: run one measurement on --db at --now and print it as JSON")
    parser.add_argument("--db", help="internal: the store --measure reads")
    parser.add_argument("--now", type=datetime.fromisoformat, help="internal: the time --measure scores at")
    parser.add_argument("--hours", type=int, default=72, help="internal: the lookback --measure uses")
    return parser.parse_args()


if __name__ == "__main__":
    args = arguments()
    if args.measure:
        print(json.dumps(child(args.measure, args.db, args.now.astimezone(timezone.utc), args.hours)))
        raise SystemExit(0)
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    raise SystemExit(main(args.laptops))
