"""Scoring at company scale (issue 12): one interval of 20,000 simulated laptops, against today's full re-read.

Setup, not timed: a simulated company (farmwatch.simulator: 85 % employees of every kind, 15 % farm
laptops) reporting every 5 minutes while awake; its 72 hours of reports up to a weekday noon in the
US, loaded directly (no HTTP) and reduced by the collector's own code, in two processes at once:

* the fleet is split by device into shards of 250 laptops, built two at a time in two processes
  (``build(..., processes=2)``); each simulates its devices, stores their reports raw into a
  SQLite collector store of its own (bulk insert: ``farmwatch.simulator.store.load_records``) and
  reduces them there with the collector's reducer (``rollups.reduce_pending``, in batches of 5,000,
  whatever format the rollups have);
* the shards are merged into one store with SQLite's ``ATTACH`` and ``INSERT … SELECT``, table by
  table as the reducer left them (rollups, sightings, devices, …; the reducer's bookkeeping is
  replaced by one progress row: everything reduced). The raw reports are copied too at the sizes
  whose full re-read is measured, and left out at the measured fleet's size (only the full re-read
  reads them; 2 KB each, about 35 GB at 20,000 laptops);
* roster and anchors are stored, then the next 5 minutes' reports are stored raw as ingest leaves
  them (not reduced: the interval's reduction is part of what is measured).

Each shard draws the base RTTs of the networks its devices share (office, coworking) on its own,
so a fleet built in two shards differs in those draws from one built in one; everything else of a
device's records depends on its seed and index only. The fleet baselines are then learned (the
hourly job, timed and printed for information).

Measured, each in fresh processes (``python bench/scoring_scale.py --measure ...``) so each peak RSS
is its own:

* **incremental**: one interval's work, ``Scorer.run`` in ``--processes`` processes at once (default
  2, as ``[detection] scoring_processes = 2`` runs it: every process claims its own batches): reduce
  the new reports, mark the devices whose rollups or sightings changed, claim them in batches of
  ``[detection] batch_devices``, score each batch from rollups (with its co-location neighbourhood
  and the stored baselines), store the verdicts and release the claims. Its time is the slowest
  process's; CPU seconds and peak memory are summed over the processes. Target: at most 60 s and
  1 GB. With several processes each one's time, how much of it it spent off the CPU (waiting for a
  core, for a lock, or done before the others; waiting for a core is also printed alone, from
  ``/proc/self/schedstat``) and its peak are printed too.
* **baseline, today's full re-read**: ``pipeline.score`` over every stored report of the 72 h window and
  the verdicts stored, as the single leased scorer did before issue 12. At 20,000 laptops that needs
  far more memory than this machine has, so it is measured at 1,000 and 2,000 laptops in the same
  run and extrapolated to the full fleet (time: the average seconds per report; memory: the line
  through the two sizes); the printed baseline says so.

Without verdict listeners: alerts are decided in the verdicts' transaction in a collector, which this
leaves out. ``--quick`` (``run_all.py --quick``): 30 laptops, 2 hours, baselines at 10 and 20 laptops.

Building the 20,000-laptop store takes 13 to 33 minutes and a measurement changes it (the interval
is reduced and scored). ``--store-dir DIR`` keeps every store the run builds in DIR, with its fleet
baselines learned, and a later run with the same DIR reuses it instead of building it again; every
measurement then runs on a copy of the kept store (``N-laptops.run.db``, deleted afterwards), so each
starts from the same state. Beside each store, ``N-laptops.json`` says what it holds: its reports, the
lookback, and the commit whose code built it. A store kept by code that stored rollups in an earlier
layout has its rows rewritten once in the current one (``current_layout``: what the reducer's next
merge into each row would write), so it scores as a store built now; anything else the other code did
differently stays: delete the folder to build again. ``--fleet-only`` skips the
1,000 and 2,000-laptop full re-reads (the baseline): it prints the measured fleet's interval alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from report import QUICK_ENV, Figure, at_most, publish, quick

from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import refresh_baselines
from farmwatch.collector.metrics import Metrics
from farmwatch.collector import rollups as reducer
from farmwatch.collector.rollups import changed_devices, reduce_pending
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import devices, reports, rollup_progress, rollups, scoring_work
from farmwatch.contract import Anchor, RosterEntry
from farmwatch.detectors.frame import packed_columns
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


def config(hours: int, batch_devices: int = 500) -> CollectorConfig:
    return CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=hours,
                           detection_interval_seconds=INTERVAL.total_seconds(), batch_devices=batch_devices)


def _records(laptops: int, start: datetime, end: datetime, first: int = 0, last: int | None = None,
             ) -> Iterator[dict[str, Any]]:
    """The fleet's records received in (start, end], device by device (each in time order): of the
    devices ``first`` up to ``last`` (fleet indices; each device's records do not depend on the others)."""
    fleet = make_fleet(SEED, laptops - laptops * 15 // 100, laptops * 15 // 100, days=4)
    simulator = Simulator(SEED, days=4)
    for index, device in enumerate(fleet[first:last], start=first):
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


SHARD_LAPTOPS = 250
"""Laptops per shard: a shard's reduction grows faster than its size (see _build_shard)."""
REDUCE_BATCH = 5_000
"""Reports per reduction batch while building."""
SHARD_SKIPS = {"reduced_reports", "rollup_progress", "scoring_work", "alembic_version", "leases"}
"""Shard tables the merge leaves behind: reduction bookkeeping (everything in a shard is reduced), and
the schema's own version (the main store was migrated by the same code)."""


def _build_shard(folder: Path, laptops: int, first: int, last: int, hours: int) -> tuple[Path, int, list[dict[str, Any]]]:
    """One shard (in a process of its own): devices ``first`` to ``last`` (fleet indices) of the fleet,
    their ``hours`` of reports up to NOON_THURSDAY stored raw into a SQLite store of their own and
    reduced there by the collector's reducer (``rollups.reduce_pending``); returns the shard's path, how
    many reports it stored, and the devices' reports of the next interval (stored later, in the
    merged store, so that one interval's reduction is measured)."""
    path = folder / f"shard-{laptops}-{first}.db"
    storage = Storage.open(f"sqlite:///{path}")
    _scratch(storage)
    history: list[dict[str, Any]] = []
    interval: list[dict[str, Any]] = []
    for record in _records(laptops, NOON_THURSDAY - timedelta(hours=hours), NOON_THURSDAY + INTERVAL, first, last):
        received = datetime.fromisoformat(record["received_at"].replace("Z", "+00:00"))
        (history if received <= NOON_THURSDAY else interval).append(record)
    stored = load_records(storage, history)
    del history
    # The reducer's own batches (rollups.reduce_pending), larger than serve's: each batch looks for
    # unreduced reports above the reducer's floor, and a bulk load's ids follow devices, not time,
    # so the floor trails far behind and small batches make the reduction quadratic in the shard.
    while reduce_pending(storage, NOON_THURSDAY, limit=REDUCE_BATCH).reports:
        pass
    storage.close()
    return path, stored, interval


def _scratch(storage: Storage) -> None:
    """A shard is a scratch file: its commits need not reach the disk (serve's stores commit with
    ``synchronous=FULL``, an fsync each; here that was an eighth of a shard's time)."""
    @sa.event.listens_for(storage.engine, "connect")
    def _no_sync(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    storage.engine.dispose()  # the connections open so far were made with FULL


def _merge(storage: Storage, shard: Path, keep_reports: bool) -> None:
    """Copy a reduced shard into the store: every table of the shard, whatever the reduction's format
    (the rollups tables are the reducer's, not this bench's), except the reduction's bookkeeping, and
    raw reports only when ``keep_reports`` (the full re-read reads them; the incremental path never
    does). Devices never repeat across shards, so no row collides."""
    raw = storage.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("ATTACH DATABASE ? AS shard", (str(shard),))
        tables = [row[0] for row in cursor.execute("SELECT name FROM shard.sqlite_master WHERE type = 'table'")]
        for table in tables:
            if table in SHARD_SKIPS or table.startswith("sqlite_") or (table == "reports" and not keep_reports):
                continue
            columns = [row[1] for row in cursor.execute(f'PRAGMA shard.table_info("{table}")')]
            if table == "reports":
                columns.remove("id")  # ids are the store's own: each shard numbered its reports from 1
            names = ", ".join(f'"{c}"' for c in columns)
            cursor.execute(f'INSERT OR IGNORE INTO main."{table}" ({names}) SELECT {names} FROM shard."{table}"')
        raw.commit()
        cursor.execute("DETACH DATABASE shard")
    finally:
        raw.close()
    shard.unlink()


def _settle_progress(storage: Storage, batches: int) -> None:
    """The merged store's reducer progress: every stored report reduced (the floor at the highest id)
    and batch numbers past every shard's, so the interval's reduction is a new batch."""
    with storage._writer.begin() as tx:
        highest = tx.execute(sa.select(sa.func.coalesce(sa.func.max(reports.c.id), 0))).scalar_one()
        tx.execute(rollup_progress.delete().where(rollup_progress.c.name == "reducer"))
        tx.execute(rollup_progress.insert().values(name="reducer", batch=batches, floor_report_id=highest))


def build(folder: Path, laptops: int, hours: int, keep_reports: bool = True, processes: int = 2) -> Store:
    """A store holding ``hours`` of the fleet's reports up to NOON_THURSDAY, reduced, nothing left to
    score; then the next interval's reports stored (not yet reduced).

    The fleet is split into shards of ``SHARD_LAPTOPS`` built ``processes`` at a time
    (:func:`_build_shard`: the simulator's records stored raw and reduced by the collector's own
    reducer, in the shard's own SQLite file), each merged as it is done (:func:`_merge`); without ``keep_reports`` the 72 h of raw reports are
    left out of the merged store (only the full re-read reads them: 2 KB each, 35 GB at 20,000
    laptops). The interval's reports are stored raw as ingest would store them."""
    now = NOON_THURSDAY + INTERVAL
    url = f"sqlite:///{folder / f'{laptops}-laptops.db'}"
    storage = Storage.open(url)
    began = time.perf_counter()
    bounds = [*range(0, laptops, SHARD_LAPTOPS), laptops]
    stored, interval = 0, []
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        shards = [pool.submit(_build_shard, folder, laptops, first, last, hours) for first, last in zip(bounds, bounds[1:])]
        for shard in shards:  # merged here while the pool builds the next ones
            path, count, records = shard.result()
            _merge(storage, path, keep_reports)
            stored += count
            interval.extend(records)
    reduced = time.perf_counter()
    with storage.engine.connect() as connection:
        batches = connection.execute(sa.select(sa.func.max(rollups.c.batch))).scalar() or 0
    _settle_progress(storage, int(batches))
    storage.replace_roster(_roster(laptops))
    storage.replace_anchors([Anchor(name=a[0], address=a[1], port=a[2], latitude=a[3], longitude=a[4]) for a in ANCHORS])
    _seen(storage)
    merged = time.perf_counter()
    # Steady state: every change so far has been scored, so the next run sees only the interval's.
    storage.mark_changed(lambda since: changed_devices(storage, since), NOON_THURSDAY)
    with storage._writer.begin() as tx:
        tx.execute(scoring_work.delete())
    interval.sort(key=lambda record: record["received_at"])
    new = load_records(storage, interval)
    _seen(storage)
    storage.close()
    print(f"{laptops:,} laptops: {stored:,} reports over {hours} h simulated, stored, reduced into rollups "
          f"and merged ({'with' if keep_reports else 'without'} the raw reports) in {reduced - began:.0f} s "
          f"({len(bounds) - 1} shards, {processes} processes), then roster and marks in {merged - reduced:.0f} s; "
          f"{new:,} reports in the next "
          f"{INTERVAL.seconds // 60} minutes", flush=True)
    return Store(url, laptops, stored, new, now)


def measure(kind: str, store: Store, hours: int, processes: int = 1, batch: int = 500) -> dict[str, Any]:
    """Run one measurement in fresh processes, ``processes`` of them at once (as ``serve`` runs
    ``[detection] scoring_processes`` scorers: each claims its own batches); its answers summed, the
    wall time of the slowest, CPU seconds (user + system) and peak RSS (GB) summed over the
    processes (each one's own peak: their sum bounds the peak of the sum)."""
    command = [sys.executable, __file__, "--measure", kind, "--db", store.url, "--now", store.now.isoformat(),
               "--hours", str(hours), "--batch-devices", str(batch)]
    began = time.perf_counter()
    children = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(processes)]
    done: dict[str, Any] = {"gb": 0.0, "cpu": 0.0}
    each = []
    for child in children:
        assert child.stdout is not None
        answer = json.loads(child.stdout.read())
        _, status, usage = os.wait4(child.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(command)} failed (status {status})")
        for key, value in answer.items():
            done[key] = max(done.get(key, 0), value) if key == "seconds" else done.get(key, 0) + value
        done["gb"] += usage.ru_maxrss / 2**20
        done["cpu"] += usage.ru_utime + usage.ru_stime
        each.append(f"{answer['seconds']:.1f} s, of it {answer['seconds'] - answer['busy']:.1f} s off the CPU "
                    f"({answer['queued']:.1f} s waiting for a core), {usage.ru_maxrss / 2**20:.2f} GB")
    done["wall"] = time.perf_counter() - began
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())  # a shared machine: say how busy it was
    print(f"  {kind} at {store.laptops:,} laptops, {processes} process{'es' if processes > 1 else ''}: "
          f"{done['seconds']:.1f} s, {done['cpu']:.1f} CPU s, peak {done['gb']:.2f} GB (load average {load})"
          + (f"; each: {'; '.join(each)}" if processes > 1 else ""), flush=True)
    return done


def child(kind: str, url: str, now: datetime, hours: int, batch: int) -> dict[str, Any]:
    """The measured work (in the child process)."""
    storage = Storage.open(url)
    settings = config(hours, batch)
    began, began_cpu, began_queued = time.perf_counter(), time.process_time(), _queued()
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
    # Off the CPU (seconds - busy): waiting for a core (queued), or for a lock, or idle while the others finish.
    return {**answer, "seconds": time.perf_counter() - began, "busy": time.process_time() - began_cpu,
            "queued": _queued() - began_queued}


def _queued() -> float:
    """Seconds this process's main thread (the scorer's, here) has spent runnable but waiting for a
    core (Linux: ``/proc/self/schedstat``; 0 elsewhere). On a shared machine it tells waiting for a
    core apart from waiting for a lock or for work."""
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _path(store: Store) -> Path:
    return Path(sa.make_url(store.url).database or "")


def _drop(store: Store) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{_path(store)}{suffix}").unlink(missing_ok=True)


def _commit() -> str:
    """The commit of the code running (with ``+`` when the work tree differs from it)."""
    here = Path(__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("+" if dirty else "")


def prepared(folder: Path, laptops: int, hours: int, keep_reports: bool, kept: bool) -> tuple[Store, dict[str, Any]]:
    """The store of ``laptops`` laptops in ``folder``, its fleet baselines learned (the hourly job,
    timed), and its description: reused when ``kept`` and a previous run kept one there (with its
    ``N-laptops.json``, the same lookback and, if ``keep_reports``, the raw reports), else built;
    kept stores are described for the next run."""
    path = folder / f"{laptops}-laptops.db"
    about = path.with_suffix(".json")
    if kept and path.exists() and about.exists():
        described = json.loads(about.read_text())
        if described["hours"] != hours or (keep_reports and not described["keep_reports"]):
            raise SystemExit(f"{path} holds {described['hours']} h {'with' if described['keep_reports'] else 'without'} "
                             f"raw reports; this run needs {hours} h{' with them' if keep_reports else ''}: "
                             f"delete it or choose another --store-dir")
        store = Store(f"sqlite:///{path}", laptops, described["records"], described["new"],
                      datetime.fromisoformat(described["now"]))
        print(f"{laptops:,} laptops: reusing {path} (built at {described['commit']}: {store.records:,} reports over "
              f"{hours} h, {store.new:,} in the interval)", flush=True)
        if described.get("layout") != reducer.PACKED:  # kept by code that stored rollups otherwise
            began = time.perf_counter()
            rewritten = current_layout(store)
            described.update(layout=reducer.PACKED, rewritten_at=_commit())
            about.write_text(json.dumps(described, indent=1))
            print(f"  {rewritten:,} rollup rows of an earlier layout rewritten in the current one "
                  f"in {time.perf_counter() - began:.0f} s", flush=True)
    else:
        store = build(folder, laptops, hours, keep_reports)
        described = {"laptops": laptops, "hours": hours, "keep_reports": keep_reports, "records": store.records,
                     "new": store.new, "now": store.now.isoformat(), "commit": _commit(), "layout": reducer.PACKED}
        if kept:  # described as soon as built: a failed baselines step below leaves it to the next run
            about.write_text(json.dumps(described, indent=1))
    if "baselines" not in described:  # learned once per store: a measurement's copy finds them stored
        described["baselines"] = {**measure("baselines", store, hours), "commit": _commit()}
        if kept:
            about.write_text(json.dumps(described, indent=1))
    else:
        print(f"  fleet baselines learned when the store was kept, at {described['baselines']['commit']}: "
              f"{described['baselines']['seconds']:.1f} s, {described['baselines']['gb']:.2f} GB", flush=True)
    return store, described


CHECKED_ROWS = 1_000
"""Rows of the plain-column layout whose quick conversion is checked against the reducer's own."""
REWRITE_DEVICES = 50
"""Devices whose rollup rows are rewritten per transaction."""


def current_layout(store: Store) -> int:
    """Rewrite the store's rollup rows of an earlier layout in the one the reducer writes now
    (``rollups.PACKED``), as the reducer's next merge into each row would write it, so a store kept
    by earlier code scores as one built now (an older row is converted on every read instead);
    returns how many rows were rewritten. A plain-column row (``rollups.COLUMNS``) is packed as it
    is (``frame.packed_columns``), checked on the first ``CHECKED_ROWS`` against the reducer's
    conversion (its windows taken apart and packed again); older rows take that conversion."""
    storage = Storage.open(store.url)
    _scratch(storage)
    rewritten = 0
    try:
        with storage.engine.connect() as connection:
            layouts = reducer._layouts(connection)
            stale = sorted(set(connection.execute(sa.select(rollups.c.device_id).where(
                rollups.c.layout != reducer.PACKED)).scalars()))
        for start in range(0, len(stale), REWRITE_DEVICES):
            with storage._writer.begin() as tx:
                rows = tx.execute(sa.select(rollups.c.device_id, rollups.c.hour, rollups.c.layout, rollups.c.windows).where(
                    rollups.c.device_id.in_(stale[start:start + REWRITE_DEVICES]), rollups.c.layout != reducer.PACKED)).all()
                updates = []
                for row in rows:
                    stored = orjson.loads(row.windows)
                    checked = row.layout != reducer.COLUMNS or rewritten < CHECKED_ROWS
                    theirs = reducer._stored_text(reducer._stored_windows(stored, row.layout, layouts)) if checked else ""
                    text = orjson.dumps(packed_columns(stored)).decode() if row.layout == reducer.COLUMNS else theirs
                    if checked and text != theirs:
                        raise RuntimeError(f"{row.device_id} hour {row.hour}: packing differs from the reducer's")
                    updates.append({"d": row.device_id, "h": row.hour, "text": text})
                    rewritten += 1
                tx.execute(rollups.update().where(rollups.c.device_id == sa.bindparam("d"), rollups.c.hour == sa.bindparam("h"))
                           .values(layout=reducer.PACKED, windows=sa.bindparam("text")), updates)
    finally:
        storage.close()
    return rewritten


@contextmanager
def scratch(store: Store, kept: bool) -> Iterator[Store]:
    """The store a measurement may change: ``store`` itself, or, when it is kept for later runs, a copy
    beside it (deleted afterwards; copying the file takes seconds, rebuilding it minutes)."""
    if not kept:
        yield store
        return
    copy = _path(store).with_suffix(".run.db")
    for suffix in ("", "-wal"):  # a store closed cleanly has no WAL left; copied whole if it has one
        if Path(f"{_path(store)}{suffix}").exists():
            shutil.copyfile(f"{_path(store)}{suffix}", f"{copy}{suffix}")
    run = Store(f"sqlite:///{copy}", store.laptops, store.records, store.new, store.now)
    try:
        yield run
    finally:
        _drop(run)


def per_report(points: list[tuple[float, float]], at: float) -> float:
    """``at`` reports times the measured points' average value per report (time: other work on the
    machine moves single runs too much for a slope between two of them to mean anything)."""
    return sum(value / reports for reports, value in points) / len(points) * at


def linear(points: list[tuple[float, float]], at: float) -> float:
    """The straight line through the first and last (reports, value) points, at ``at`` reports (memory:
    a fixed part, the interpreter and libraries, plus a part per report held)."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    return y1 + (y1 - y0) / (x1 - x0) * (at - x1)


def main(laptops: int, processes: int, batch: int, store_dir: Path | None = None, fleet_only: bool = False) -> int:
    hours, sizes = (2, [10, 20]) if quick() else (72, [1_000, 2_000])
    sizes = [] if fleet_only else sizes
    laptops = 30 if quick() else laptops
    kept = store_dir is not None
    with tempfile.TemporaryDirectory(prefix="farmwatch-scoring-scale-", dir=os.environ.get("FARMWATCH_BENCH_DIR")) as tmp:
        folder = store_dir or Path(tmp)
        full: list[tuple[int, dict[str, Any]]] = []
        small: list[tuple[Store, dict[str, Any]]] = []
        for size in sizes:
            store, _ = prepared(folder, size, hours, keep_reports=True, kept=kept)
            with scratch(store, kept) as run:
                full.append((store.records, measure("full", run, hours)))
            with scratch(store, kept) as run:
                small.append((store, measure("incremental", run, hours, processes, batch)))
            if not kept:
                _drop(store)  # about 2 GB per 1,000 laptops: keep one store on disk at a time
        # only the full re-read reads raw reports
        fleet, described = prepared(folder, laptops, hours, keep_reports=False, kept=kept)
        refreshed = described["baselines"]
        with scratch(fleet, kept) as run:
            interval = measure("incremental", run, hours, processes, batch)
    print(f"code measured: {_commit()}; the {laptops:,}-laptop store built at {described['commit']}", flush=True)
    for (records, done), (store, incremental) in zip(full, small):
        print(f"{store.laptops:,} laptops, {records:,} reports: full re-read {done['seconds']:.1f} s, "
              f"peak {done['gb']:.2f} GB; one interval incremental ({incremental['devices']:.0f} devices) "
              f"{incremental['seconds']:.1f} s, {incremental['cpu']:.1f} CPU s, peak {incremental['gb']:.2f} GB "
              f"({processes} scoring process{'es' if processes > 1 else ''})")
    scored = (f"{laptops:,} laptops, {fleet.records:,} reports in {hours} h, {fleet.new:,} new in the interval: "
              f"{interval['devices']:.0f} devices scored, {interval['verdicts']} verdicts in {interval['seconds']:.1f} s "
              f"by {processes} scoring process{'es' if processes > 1 else ''}, batches of {batch} ({interval['cpu']:.1f} CPU s, "
              f"{interval['cpu'] / max(interval['devices'], 1) * 1000:.1f} ms per device), "
              f"peak {interval['gb']:.2f} GB summed over them (fleet baselines, hourly: {refreshed['seconds']:.1f} s, "
              f"{refreshed['gb']:.2f} GB)")
    if not full:
        print(scored + "; no full re-read measured (--fleet-only)")
        publish([Figure(f"one interval's scoring, {laptops:,} laptops, {hours} h stored", interval["seconds"], "s",
                        target=at_most(TARGET_SECONDS)),
                 Figure(f"peak memory of one interval's scoring, {laptops:,} laptops, summed over {processes} process(es)",
                        interval["gb"], "GB", target=at_most(TARGET_GB))])
        return 0
    seconds_line = [(float(records), done["seconds"]) for records, done in full]
    memory_line = [(float(records), done["gb"]) for records, done in full]
    full_seconds, full_gb = per_report(seconds_line, fleet.records), linear(memory_line, fleet.records)
    print(scored + f"; full re-read EXTRAPOLATED from {sizes[0]:,}/{sizes[-1]:,} laptops: {full_seconds:.0f} s, {full_gb:.1f} GB")
    if laptops < 20_000 and not quick():
        print(f"EXTRAPOLATED, not measured: one interval at 20,000 laptops, in proportion to the fleet from "
              f"{laptops:,}: {interval['seconds'] * 20_000 / laptops:.0f} s with {processes} scoring process(es)")
    extrapolated = f"today's full re-read, EXTRAPOLATED from {sizes[0]:,} and {sizes[-1]:,} laptops measured in this run"
    figures = [
        Figure(f"one interval's scoring, {laptops:,} laptops, {hours} h stored", interval["seconds"], "s",
               baseline=full_seconds, baseline_is=extrapolated, target=at_most(TARGET_SECONDS)),
        Figure(f"peak memory of one interval's scoring, {laptops:,} laptops, summed over {processes} process(es)",
               interval["gb"], "GB",
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
    parser.add_argument("--processes", type=int, default=2,
                        help="scoring processes measured side by side, as [detection] scoring_processes (default 2: "
                             "this machine's cores)")
    parser.add_argument("--batch-devices", type=int, default=100,
                        help="[detection] batch_devices of the incremental runs (default 100: each process then "
                             "holds 100-199 devices' frames at once, so two stay under 1 GB together)")
    parser.add_argument("--store-dir", type=Path,
                        help="keep the stores this run builds in this folder (with their fleet baselines) and reuse "
                             "the ones a previous run kept there; every measurement runs on a copy, so the kept "
                             "stores stay as built (the 20,000-laptop one takes 13-33 minutes to build)")
    parser.add_argument("--fleet-only", action="store_true",
                        help="measure only the --laptops fleet's interval: no 1,000/2,000-laptop full re-reads, "
                             "so no baseline is printed")
    parser.add_argument("--measure", choices=("full", "incremental", "baselines"),
                        help="internal: run one measurement on --db at --now and print it as JSON")
    parser.add_argument("--db", help="internal: the store --measure reads")
    parser.add_argument("--now", type=datetime.fromisoformat, help="internal: the time --measure scores at")
    parser.add_argument("--hours", type=int, default=72, help="internal: the lookback --measure uses")
    return parser.parse_args()


if __name__ == "__main__":
    args = arguments()
    if args.measure:
        print(json.dumps(child(args.measure, args.db, args.now.astimezone(timezone.utc), args.hours, args.batch_devices)))
        raise SystemExit(0)
    if args.quick:
        os.environ[QUICK_ENV] = "1"
    raise SystemExit(main(args.laptops, args.processes, args.batch_devices, args.store_dir, args.fleet_only))
