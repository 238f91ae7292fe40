"""Scoring after one new interval of reports: from rollups (issue 12) against today's full re-read.

A simulated fleet (farmwatch.simulator) is stored in a real collector store (SQLite file), all but
its last five minutes of reports, and reduced into rollups. Then the last interval's reports are
stored and each way of scoring runs in its own forked process (time and that process's peak RSS):

* baseline: ``pipeline.score`` over ``Storage.records`` of the whole lookback window, every device
  (what the collector did before rollups);
* incremental: reduce the new reports, ask ``changed_devices`` which devices that touched, and
  ``score_devices`` them (neighbours and stored fleet baselines included).

Both produce the same verdicts for the changed devices (checked here too; the equality test is
tests/collector/test_incremental_scoring.py). Also printed: reducing the backlog and refreshing the
fleet baselines (the hourly cost), which the incremental path pays outside the interval.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from report import Figure, at_most, publish, quick

from farmwatch.collector import incremental as incremental_scoring
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.incremental import refresh_baselines, score_devices
from farmwatch.collector.rollups import changed_devices, reduce_pending
from farmwatch.collector.storage import Storage
from farmwatch.contract import to_wire
from farmwatch.detectors.pipeline import score
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records

CONFIG = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20, lookback_hours=72)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _records(path: Path, keep: Callable[[datetime], bool]) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            record = orjson.loads(line)
            if keep(_time(record["received_at"])):
                yield record


def in_child(work: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """Run ``work`` in a forked process: its result, seconds, the process's peak RSS in GB and its CPU
    seconds (user and system: on a shared machine wall time is mostly waiting for a core)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: work, hand back the result, leave without running the parent's cleanup
        os.close(read)
        began = time.perf_counter()
        result = work()
        with os.fdopen(write, "wb") as out:
            out.write(orjson.dumps({"result": result, "seconds": time.perf_counter() - began}))
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        body = answer.read()
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not body:
        raise RuntimeError(f"the measured child failed (status {status})")
    done = orjson.loads(body)
    return done["result"], done["seconds"], usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime


FRAME_BUILDERS = ("frames_from_columns", "frames_from_windows")
"""What ``score_devices`` rebuilds frames with (reading and decoding the rollups included): the first
one its module has is timed (frames_from_windows before the columnar rollups)."""
DETECTOR_RUNNERS = ("detect", "score_frames")
"""What ``score_devices`` runs the detectors with: the first one its module has is timed (score_frames
before a batch's devices were scored in parts and co-location on its neighbourhood's columns)."""


def timed_in_process(module: Any, name: str, spent: dict[str, float], label: str) -> None:
    """Replace ``module.name`` with a wrapper adding the process CPU seconds of each call to ``spent[label]``."""
    inner = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.process_time() - began
    setattr(module, name, timed)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--laptops", type=int, default=None,
                        help="simulated fleet size, 4 days of reports (default 600; 60 with run_all.py --quick)")
    return parser.parse_args()


def main() -> int:
    laptops = arguments().laptops or (60 if quick() else 600)
    with tempfile.TemporaryDirectory(prefix="farmwatch-incremental-") as tmp:
        files = write_fleet(Path(tmp), seed=21, legit=laptops * 5 // 6, farms=laptops // 6, days=4)
        last = max(_time(r["received_at"]) for r in _records(files.records, lambda _: True))
        cut = last - timedelta(minutes=5)
        url = f"sqlite:///{Path(tmp) / 'collector.db'}"
        storage = Storage.open(url)
        load_records(storage, _records(files.records, lambda at: at <= cut))
        storage.replace_roster(load_roster(files.roster))
        storage.replace_anchors(load_anchors(files.anchors))
        before = cut + timedelta(seconds=30)
        began = time.perf_counter()
        reduced = 0
        while (done := reduce_pending(storage, before, limit=5000)).reports:
            reduced += done.reports
        backlog_seconds = time.perf_counter() - began
        _, mark = changed_devices(storage, 0)
        now = last + timedelta(seconds=30)
        new = load_records(storage, _records(files.records, lambda at: at > cut))
        storage.close()  # each child opens its own: database connections do not survive a fork

        def reduce_interval() -> int:
            store, filed = Storage.open(url), 0
            while (done := reduce_pending(store, now)).reports:
                filed += done.reports
            return filed

        def full() -> dict[str, Any]:
            store = Storage.open(url)
            since = now - timedelta(hours=CONFIG.lookback_hours)
            verdicts = score(store.records(since=since), store.roster(), store.anchors(), now, CONFIG.detection,
                             store.suppressed_detectors(now))
            return {v.device_id: to_wire(v) for v in verdicts}

        def incremental() -> dict[str, Any]:
            store = Storage.open(url)
            changed, _ = changed_devices(store, mark)
            spent: dict[str, float] = {}
            builder = next(name for name in FRAME_BUILDERS if hasattr(incremental_scoring, name))
            timed_in_process(incremental_scoring, builder, spent, "frames")
            runner = next(name for name in DETECTOR_RUNNERS if hasattr(incremental_scoring, name))
            timed_in_process(incremental_scoring, runner, spent, "detectors")
            verdicts = {v.device_id: to_wire(v) for v in score_devices(store, changed, now, CONFIG).verdicts}
            return {"verdicts": verdicts, "cpu": spent}

        everyone, full_seconds, full_gb, full_cpu = in_child(full)
        filed, reduce_seconds, reduce_gb, reduce_cpu = in_child(reduce_interval)
        # The hourly refresh, here over the data just reduced so both paths see the same fleet.
        _, refresh_seconds, refresh_gb, _ = in_child(lambda: bool(refresh_baselines(Storage.open(url), now, CONFIG)))
        scored, score_seconds, score_gb, score_cpu = in_child(incremental)
        changed, split = scored["verdicts"], scored["cpu"]
    print(f"{files.count:,} records of {laptops} laptops; backlog of {reduced:,} reduced in {backlog_seconds:.1f} s; "
          f"{new} new reports, {filed} reduced in {reduce_seconds:.1f} s; fleet baselines refreshed in "
          f"{refresh_seconds:.1f} s (peak rss {refresh_gb:.2f} GB)")
    incremental_seconds, incremental_gb = reduce_seconds + score_seconds, max(reduce_gb, score_gb)
    incremental_cpu_ms = (reduce_cpu + score_cpu) * 1000 / max(len(changed), 1)
    full_cpu_ms = full_cpu * 1000 / max(len(everyone), 1)
    same = all(everyone[device] == verdict for device, verdict in changed.items())
    per_device = {part: seconds * 1000 / max(len(changed), 1) for part, seconds in split.items()}
    print(f"incremental scoring CPU per changed device: frames from rollups {per_device['frames']:.2f} ms "
          f"(reading and decoding included), detectors {per_device['detectors']:.2f} ms")
    print(f"full re-read: {len(everyone)} devices in {full_seconds:.1f} s ({full_cpu_ms:.1f} ms CPU per device), "
          f"peak rss {full_gb:.2f} GB; incremental: {len(changed)} changed devices in {incremental_seconds:.1f} s "
          f"({incremental_cpu_ms:.1f} ms CPU per device), peak rss {incremental_gb:.2f} GB; same verdicts: {same}; "
          f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    if not same:
        print("incremental verdicts differ from the full re-read", file=sys.stderr)
        return 1
    fleet = f"{laptops} laptops, 72 h"
    publish([
        Figure(f"score after one interval ({fleet}), rollups", incremental_seconds, "s", baseline=full_seconds,
               baseline_is="full re-read of the lookback", target=at_most(1.0, ratio=True)),
        Figure(f"CPU per device scoring one interval ({fleet}), rollups", incremental_cpu_ms, "ms",
               baseline=full_cpu_ms, baseline_is="full re-read of the lookback, per device"),
        Figure(f"CPU per device rebuilding frames from rollups ({fleet})", per_device["frames"], "ms"),
        Figure(f"CPU per device in the detectors, scoring from rollups ({fleet})", per_device["detectors"], "ms"),
        Figure(f"peak memory scoring one interval ({fleet}), rollups", incremental_gb, "GB", baseline=full_gb,
               baseline_is="full re-read of the lookback", target=at_most(1.0, ratio=True)),
        Figure(f"reduce {reduced:,} stored reports into rollups", backlog_seconds, "s"),
        Figure(f"refresh fleet baselines from rollups ({fleet}), hourly", refresh_seconds, "s"),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
