"""Group commit on a real SQLite file: queued writes share one transaction, a failing step is rolled
back alone, a database failure fails the whole batch, and nobody hears back before the commit.
Here each item is a step (a function of the transaction), written in order by ``run_steps``."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from farmwatch.collector.group_commit import GroupCommit
from farmwatch.collector.storage import open_engine


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'group.db'}")
    with engine.begin() as tx:
        tx.exec_driver_sql("CREATE TABLE rows (n INTEGER PRIMARY KEY)")
    return engine


def rows(engine: sa.Engine) -> list[int]:
    with sqlite3.connect(engine.url.database or "") as db:
        return [n for (n,) in db.execute("SELECT n FROM rows ORDER BY n")]


def run_steps(tx: Connection, steps: list[Callable[[Connection], object]]) -> list[object]:
    return [step(tx) for step in steps]


def insert(n: int) -> Callable[[Connection], int]:
    def step(tx: Connection) -> int:
        tx.exec_driver_sql(f"INSERT INTO rows (n) VALUES ({n})")
        return n
    return step


def holding() -> tuple[threading.Event, threading.Event, Callable[[Connection], str]]:
    """A step that keeps the committer busy (``started`` once it runs) until ``release`` is set, so
    that the writes submitted meanwhile queue up for the next batch."""
    started, release = threading.Event(), threading.Event()

    def hold(tx: Connection) -> str:
        started.set()
        release.wait(10)
        return "held"
    return started, release, hold


def broken(tx: Connection) -> None:
    """A step that writes a row and then fails on its own (row 100 must be rolled back alone)."""
    tx.exec_driver_sql("INSERT INTO rows (n) VALUES (100)")
    raise ValueError("this step's own problem")


def test_queued_writes_share_one_commit_and_a_failing_step_fails_alone(engine: sa.Engine) -> None:
    group = GroupCommit(engine.execution_options(write=True).begin, run_steps)
    started, release, hold = holding()

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(group.run, hold)
        assert started.wait(10)
        queued: list[Future[int]] = [pool.submit(group.run, insert(n)) for n in range(1, 6)]
        failing = pool.submit(group.run, broken)
        while group._queue.qsize() < 6:  # every write is waiting for the next batch
            threading.Event().wait(0.01)
        assert rows(engine) == []  # nothing acknowledged, nothing committed yet
        release.set()
        assert first.result(10) == "held"
        assert [f.result(10) for f in queued] == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError, match="own problem"):
            failing.result(10)
    assert rows(engine) == [1, 2, 3, 4, 5]  # row 100 was rolled back with its step alone
    assert (group.batches, group.steps) == (2, 7)
    group.close()


def test_a_database_failure_fails_every_step_of_the_batch(engine: sa.Engine) -> None:
    group = GroupCommit(engine.execution_options(write=True).begin, run_steps)
    started, release, hold = holding()

    def lost(tx: Connection) -> None:
        tx.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")  # an OperationalError, like a full disk

    with ThreadPoolExecutor(4) as pool:
        pool.submit(group.run, hold)
        assert started.wait(10)
        fine = pool.submit(group.run, insert(7))
        failing = pool.submit(group.run, lost)
        while group._queue.qsize() < 2:
            threading.Event().wait(0.01)
        release.set()
        with pytest.raises(sa.exc.OperationalError):
            failing.result(10)
        with pytest.raises(sa.exc.OperationalError):
            fine.result(10)  # its write shared the failed transaction: not stored, so not acknowledged
    assert rows(engine) == []
    assert group.run(insert(8)) == 8  # the committer goes on
    assert rows(engine) == [8]
    group.close()


def test_a_write_whose_caller_gave_up_before_its_batch_is_left_out(engine: sa.Engine) -> None:
    group = GroupCommit(engine.execution_options(write=True).begin, run_steps)
    started, release, hold = holding()

    held = group.submit(hold)
    assert started.wait(10)
    abandoned, kept = group.submit(insert(1)), group.submit(insert(2))
    assert abandoned.cancel()  # e.g. the client hung up while its report was queued
    release.set()
    assert kept.result(10) == 2 and held.result(10) == "held"
    assert rows(engine) == [2]  # nobody waits for row 1, so it was never written
    assert not held.cancel()  # once its batch began, a write can no longer be abandoned
    group.close()


def test_writes_awaited_on_an_event_loop_share_a_batch_and_hear_their_own_outcome(engine: sa.Engine) -> None:
    group = GroupCommit(engine.execution_options(write=True).begin, run_steps)
    started, release, hold = holding()

    async def scenario() -> tuple[list[object], list[int]]:
        held = group.submit(hold)
        assert started.wait(10)
        writes = [asyncio.ensure_future(group.write(step)) for step in (insert(1), broken, insert(2), insert(3))]
        abandoned = asyncio.ensure_future(group.write(insert(4)))
        while group._queue.qsize() < 5:  # every write is queued behind the held batch
            await asyncio.sleep(0.01)
        assert rows(engine) == []  # nobody answered, nothing committed
        abandoned.cancel()  # the client hung up before its batch began
        await asyncio.sleep(0)
        release.set()
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        assert held.result(10) == "held"
        return outcomes, rows(engine)

    outcomes, stored = asyncio.run(scenario())
    assert outcomes[0] == 1 and outcomes[2:] == [2, 3]
    assert isinstance(outcomes[1], ValueError)
    assert stored == [1, 2, 3]  # row 100 rolled back alone, row 4 never written
    assert (group.batches, group.steps) == (2, 5)  # the four remaining writes shared one commit
    group.close()


def concurrent_writes(group: GroupCommit[Any, Any]) -> tuple[Future[Any], list[Future[Any]]]:
    """A held write, then inserts 1 and 2 queued behind it, so that they share the next batch and
    the batch after that gathers (writers were concurrent); returns their futures."""
    started, release, hold = holding()
    lone = group.submit(hold)
    assert started.wait(10)
    queued = [group.submit(insert(n)) for n in (1, 2)]
    while group._queue.qsize() < 2:
        threading.Event().wait(0.01)
    release.set()
    return lone, queued


def test_after_a_batch_of_several_writes_the_next_batch_gathers_the_writes_that_follow(engine: sa.Engine) -> None:
    # A window far longer than the test: a batch ends early only by reaching max_batch.
    group = GroupCommit(engine.execution_options(write=True).begin, run_steps, max_batch=3, gather_seconds=60)
    lone, queued = concurrent_writes(group)
    assert lone.result(10) == "held"  # the first write after a quiet spell did not wait to gather
    assert [f.result(10) for f in queued] == [1, 2]
    assert group.batches == 2  # the held write alone, then the two queued behind it

    first = group.submit(insert(3))  # writers were concurrent: this batch waits for more ...
    threading.Event().wait(0.2)
    assert not first.done()
    later = [group.submit(insert(n)) for n in (4, 5)]  # ... and takes these, full at max_batch
    assert [f.result(10) for f in (first, *later)] == [3, 4, 5]
    assert (group.batches, group.steps) == (3, 6)
    assert rows(engine) == [1, 2, 3, 4, 5]
    group.close()


def voluntary_switches(thread: threading.Thread) -> int:
    """How often ``thread`` has gone to sleep so far (Linux counts it per thread)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")).split()[1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread counts are read from Linux's /proc")
def test_a_gathering_batch_sleeps_through_the_writes_that_join_it_until_one_fills_it(engine: sa.Engine) -> None:
    """The committer is not woken by each write queued while it gathers (each wake-up took the GIL
    from the serving event loop), only by the one that fills the batch."""
    group = GroupCommit(engine.execution_options(write=True).begin, run_steps, max_batch=41, gather_seconds=60)
    lone, queued = concurrent_writes(group)
    assert [f.result(10) for f in (lone, *queued)] == ["held", 1, 2]  # two writes shared a batch: the next gathers

    first = group.submit(insert(3))
    while group._queue.qsize():  # the committer took it and gathers ...
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)
    asleep = voluntary_switches(group._thread)
    joining = []
    for n in range(4, 43):  # ... while 39 writes join, one every 2 ms
        joining.append(group.submit(insert(n)))
        threading.Event().wait(0.002)
    assert voluntary_switches(group._thread) - asleep <= 1
    assert not first.done()
    filling = group.submit(insert(43))  # the 41st of the batch
    assert [f.result(10) for f in (first, *joining, filling)] == list(range(3, 44))
    assert (group.batches, group.steps) == (3, 44)
    group.close()
