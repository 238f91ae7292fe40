"""Garbage-collector settings for the collector's long-running processes (``serve`` and its reducer).

Under load, py-spy ``--native`` showed the serving process spending about a quarter of its CPU in
``gc_collect_main`` (issue 13): every report allocates thousands of container objects (pydantic
parsing, SQLAlchemy rows, asyncio tasks), so with Python's default thresholds (700, 10, 10)
collections run hundreds of times a second, and each older-generation pass walked every object the
process had built at start (modules, the app, the schema, pydantic's validators). Measured with
bench/collector_ingest.py's load on this 2-core machine: 1,067 us of serving-process CPU per report
with the defaults, 921 with :func:`gc.freeze` alone, 716 with both settings below.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 20)
"""Allocations before a young collection, and young/middle collections before an older one: fewer,
larger passes. Only reference cycles wait for them; everything else is freed at once, as always."""


def settle_long_lived() -> None:
    """Call once a process has built what it keeps: that is frozen out of every later collection,
    and collections run at :data:`THRESHOLDS`."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
