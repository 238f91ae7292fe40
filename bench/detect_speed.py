"""How long farmwatch-detect takes on 1,000,000 ingest records, against merely parsing them (issue 13: <= 3x).

The records come from the simulator (a fleet of ~1,000 laptops over a week) written to a temporary
folder. The baseline reads the same file and parses every line whole with orjson (a 1 MiB buffer,
as farmwatch-detect's reader did until it decoded only the fields detectors read) and does nothing
else, once before and once after the command (the figure's baseline is their mean, both printed, so
a load that changes during the run moves both sides); the full run is the real `farmwatch-detect`
command (a separate process, imports included). For information it also prints how long
farmwatch-detect's own reader takes alone (``farmwatch.detectors.frame.read_records``: msgspec
decodes each line into only the fields the reduction reads).
Targets: at most 3x the parse-only time (issue 13), under a minute on this 2-core machine (issue 5).
The command runs as it runs by default: its reading on every CPU (``--workers``: worker processes
read and reduce parts of the file, and share the detectors). Its memory is printed as the peak of
the PSS summed over the command and its workers (proportional set size: a page shared by forked
processes counts once in the sum, where RSS would count it in each; sampled from /proc every 50 ms,
so a peak shorter than that may be missed), beside the largest single process's peak RSS (the
kernel's maximum over the command and the children it waited for: exact, but not a sum). A
collector's full re-read holds the same frames.
For information it also prints both sides' CPU seconds (the command's include its workers'): on a
machine shared with other work, wall time moves with the load and CPU time much less (the load
average is printed beside them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

from farmwatch.detectors.frame import read_records
from farmwatch.simulator.cli import write_fleet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Figure, at_most, describe, publish, quick  # noqa: E402

RECORDS = 20_000 if quick() else 1_000_000


READ_BUFFER = 1 << 20


def parse_only(path: Path) -> tuple[int, float, float]:
    """Read and parse every record of ``path`` whole, keeping nothing: the floor any scorer of
    JSON-lines records pays. Returns the count, wall seconds and CPU seconds."""
    began, cpu_began = time.perf_counter(), time.process_time()
    with path.open("rb", buffering=READ_BUFFER) as handle:
        count = sum(1 for line in handle if isinstance(orjson.loads(line), dict))
    return count, time.perf_counter() - began, time.process_time() - cpu_began


def reader_only(path: Path) -> tuple[float, float]:
    """farmwatch-detect's own reader over ``path``, keeping nothing: wall and CPU seconds."""
    began, cpu_began = time.perf_counter(), time.process_time()
    for _ in read_records(path):
        pass
    return time.perf_counter() - began, time.process_time() - cpu_began


SAMPLE_SECONDS = 0.05


class SummedPss:
    """The peak, over samples every :data:`SAMPLE_SECONDS`, of the PSS summed over a process and
    all its descendants (farmwatch-detect and its workers), in bytes, sampled in a thread until
    :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.peak = 0
        self._process = psutil.Process(pid)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stopped.is_set():
            total = 0
            try:
                for process in [self._process, *self._process.children(recursive=True)]:
                    total += process.memory_full_info().pss
            except psutil.Error:  # a process ended between the listing and its reading: this sample is partial
                pass
            self.peak = max(self.peak, total)
            self._stopped.wait(SAMPLE_SECONDS)

    def stop(self) -> int:
        self._stopped.set()
        self._thread.join()
        return self.peak


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="farmwatch-speed-") as tmp:
        began = time.perf_counter()
        files = write_fleet(Path(tmp), seed=11, legit=1080, farms=230, days=7, limit=RECORDS)
        size = files.records.stat().st_size
        print(f"simulated {files.count:,} records ({size / 1e9:.2f} GB) in {time.perf_counter() - began:.0f} s",
              flush=True)
        parsed, *before = parse_only(files.records)
        detect = Path(sys.executable).with_name("farmwatch-detect")
        command = [str(detect), str(files.records), "--roster", str(files.roster), "--anchors", str(files.anchors),
                   "--out", str(Path(tmp) / "verdicts.jsonl")]
        began = time.perf_counter()
        child = subprocess.Popen(command)
        summed = SummedPss(child.pid)
        _, status, usage = os.wait4(child.pid, 0)  # this child's rusage and its workers', whatever ran before here
        summed_peak = summed.stop()
        detect_seconds = time.perf_counter() - began
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise subprocess.CalledProcessError(child.returncode, command)
        verdicts = sum(1 for _ in (Path(tmp) / "verdicts.jsonl").open("rb"))
        _, *after = parse_only(files.records)
        reader = reader_only(files.records)
    parse_seconds, parse_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    detect_cpu = usage.ru_utime + usage.ru_stime
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"parse only: {parsed:,} records in {before[0]:.1f} s before and {after[0]:.1f} s after the command "
          f"({before[1]:.1f} and {after[1]:.1f} s CPU); farmwatch-detect: "
          f"{verdicts} verdicts in {detect_seconds:.1f} s ({detect_cpu:.1f} s CPU); its reader alone "
          f"{reader[0]:.1f} s ({reader[1]:.1f} s CPU); load average {load}")
    publish([
        Figure(f"farmwatch-detect on {files.count:,} records", detect_seconds, "s", parse_seconds,
               "reading and parsing the same records whole (orjson), same run", at_most(3, ratio=True)),
        Figure(f"farmwatch-detect on {files.count:,} records, wall time", detect_seconds, "s", target=at_most(60)),
        Figure(f"farmwatch-detect on {files.count:,} records, CPU time", detect_cpu, "s", parse_cpu,
               "reading and parsing the same records whole (orjson), CPU time, same run"),
        Figure(f"farmwatch-detect on {files.count:,} records, peak PSS summed over its processes", summed_peak / 2**20,
               "MB"),
        Figure(f"farmwatch-detect on {files.count:,} records, largest process's peak RSS", usage.ru_maxrss / 2**10,
               "MB"),
        Figure(f"farmwatch-detect's reader alone on {files.count:,} records", reader[0], "s", parse_seconds,
               "reading and parsing the same records whole (orjson), same run"),
    ])
    return 0


if __name__ == "__main__":
    describe(__doc__)
    raise SystemExit(main())
