"""farmwatch-detect's reading on several cores: the records file is cut into parts (byte ranges,
each holding the lines that begin in it), each part is read and reduced into columns
(:class:`~farmwatch.detectors.frame.Gathered`: numpy arrays, cheap to hand back) by whichever
process is free next (:class:`~farmwatch.detectors.forked.SharedTasks`), and the frames are built
once from all of them in the file's order. They are the frames one process builds: a device's
records may lie in several parts, and the windows are sorted by device only once they are joined.
"""

from __future__ import annotations

import os
from itertools import accumulate, count
from pathlib import Path
from types import TracebackType

from farmwatch.detectors.forked import SharedTasks
from farmwatch.detectors.frame import (
    Frames,
    Gathered,
    RecordError,
    flatten,
    frames_from_gathered,
    gather_windows,
    paused_gc,
    read_records,
    reduce_record,
    unreadable,
)

MIN_PART_BYTES = 1 << 20
"""A file is cut into parts of at least this many bytes (1 MiB, about 500 records): a smaller
part is not worth a process."""
PARTS_PER_PROCESS = 16
"""Parts per reading process: a process that starts late (this one imports the detectors while
the others read) or runs slower (other work on the machine) takes fewer, and all finish within
about one part's time, or less with :data:`TAIL_DIVISORS` (a 2 GB file read by two processes:
32 parts of about 0.7 s each, the last four shorter)."""
TAIL_DIVISORS = (2, 4)
"""The last parts are smaller: ``processes`` parts of half a part, then ``processes`` of a
quarter. When the last part is taken, the others are within a quarter or half part of their end,
so the wait for them (one core idle), and the unpickling of their last columns, is about a
quarter of what it is with parts of one size (half a part on average: about 0.3 s of a 2 GB
file's 0.7 s parts)."""


def cpus() -> int:
    """The number of CPUs this process may run on (``os.process_cpu_count`` from Python 3.13)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class FileReading:
    """The frames of the ingest records in ``path`` (JSON lines, as :func:`flatten` of
    :func:`read_records` builds them), read and reduced by up to ``workers`` processes: this one
    and ``workers - 1`` forked ones, which start reading when this is made (one process for a file
    under ``workers`` MiB). :meth:`frames` joins them. Raises RecordError for a record it cannot
    use, named as one process names it. Used as a context manager, it stops the forked processes
    if the frames are never asked for."""

    def __init__(self, path: Path, workers: int) -> None:
        self._path = path
        try:
            size = path.stat().st_size
        except OSError as failure:
            raise unreadable(path, failure) from None
        processes = max(1, min(workers, size // MIN_PART_BYTES))
        self._bounds = part_bounds(size, processes)
        parts = len(self._bounds) - 1
        pool: dict[str, str] = {}  # each process's own copy: the strings of all the parts it reads, pooled
        self._shared: SharedTasks[Gathered] | None = None
        if parts > 1:
            bounds = self._bounds
            self._shared = SharedTasks(parts, lambda part: _gathered_part(path, bounds[part], bounds[part + 1], pool),
                                       processes - 1)

    def frames(self) -> Frames:
        if self._shared is None:
            return flatten(read_records(self._path))
        shared, self._shared = self._shared, None
        gathered = shared.results()
        return frames_from_gathered([gathered.pop(part) for part in range(len(self._bounds) - 1)])

    def __enter__(self) -> FileReading:
        return self

    def __exit__(self, kind: type[BaseException] | None, failure: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._shared is not None:
            self._shared.stop()


def part_bounds(size: int, processes: int) -> list[int]:
    """Where a file of ``size`` bytes is cut into the parts ``processes`` processes take (each
    part's first byte, then ``size``): ``processes * PARTS_PER_PROCESS`` parts, none under
    :data:`MIN_PART_BYTES`, the last ones smaller (:data:`TAIL_DIVISORS`) where every part then
    still holds that many bytes; one part for one process."""
    parts = 1 if processes == 1 else min(processes * PARTS_PER_PROCESS, size // MIN_PART_BYTES)
    largest = max(TAIL_DIVISORS)  # each part's share of the file, in parts of this many shares
    shares = [largest] * (parts - processes * len(TAIL_DIVISORS))
    shares += [largest // divisor for divisor in TAIL_DIVISORS for _ in range(processes)]
    if len(shares) != parts or size * min(shares) // sum(shares) < MIN_PART_BYTES:
        shares = [1] * parts  # too small a file for a smaller tail: parts of one size
    ends = list(accumulate(shares, initial=0))
    return [size * end // ends[-1] for end in ends]


def _gathered_part(path: Path, start: int, end: int, pool: dict[str, str]) -> Gathered:
    """The columns of the records on the lines of ``path`` that begin from byte ``start`` to
    before ``end``, their strings pooled in ``pool``."""
    with paused_gc():
        try:
            return gather_windows(map(reduce_record, read_records(path, start, end), count(1)), pool)
        except RecordError:
            if not start:
                raise
            # Named by its place in this part: read once more from the file's start, which refuses
            # the same record (or an earlier one) named by its line or record number in the file.
            for _ in map(reduce_record, read_records(path, 0, end), count(1)):
                pass
            raise
