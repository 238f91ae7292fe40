"""farmwatch-detect's reading on several cores: the records file is cut into parts (byte ranges,
each holding the lines that begin in it), each part is read and reduced in its own process into
columns (:class:`~farmwatch.detectors.frame.Gathered`: numpy arrays, cheap to hand back), and the
frames are built once from all of them in the file's order. They are the frames one process
builds: a device's records may lie in several parts, and the windows are sorted by device only
once they are joined.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from itertools import count
from pathlib import Path

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


def cpus() -> int:
    """The number of CPUs this process may run on (``os.process_cpu_count`` from Python 3.13)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def read_frames(path: Path, workers: int) -> Frames:
    """The frames of the ingest records in ``path`` (JSON lines, as :func:`flatten` of
    :func:`read_records` builds them), read and reduced by up to ``workers`` processes: this one
    and ``workers - 1`` others, each taking an equal part of the file (fewer for a file under
    ``workers`` MiB). Raises RecordError for a record it cannot use, named as one process names it."""
    try:
        size = path.stat().st_size
    except OSError as failure:
        raise unreadable(path, failure) from None
    parts = max(1, min(workers, size // MIN_PART_BYTES))
    if parts == 1:
        return flatten(read_records(path))
    bounds = [size * index // parts for index in range(parts + 1)]
    with ProcessPoolExecutor(parts - 1) as pool:
        others = [pool.submit(_gathered_part, path, start, end) for start, end in zip(bounds[1:-1], bounds[2:])]
        first = _gathered_part(path, 0, bounds[1])
        return frames_from_gathered([first, *(other.result() for other in others)])


def _gathered_part(path: Path, start: int, end: int) -> Gathered:
    """The columns of the records on the lines of ``path`` that begin from byte ``start`` to
    before ``end``."""
    with paused_gc():
        try:
            return gather_windows(map(reduce_record, read_records(path, start, end), count(1)))
        except RecordError:
            if not start:
                raise
            # Named by its place in this part: read once more from the file's start, which refuses
            # the same record (or an earlier one) named by its line or record number in the file.
            for _ in map(reduce_record, read_records(path, 0, end), count(1)):
                pass
            raise
