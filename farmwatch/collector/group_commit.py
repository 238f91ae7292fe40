"""Group commit: concurrent writes share one transaction, so one commit (one fsync) acknowledges many.

With SQLite's ``synchronous=FULL`` every commit waits for the disk; on PostgreSQL every commit is
a round trip and a WAL flush. Writers hand an item to one committer thread; while it commits a
batch, the next items queue, and the next batch takes them all (at most ``max_batch``). The batch
goes to ``write(tx, items)`` at once, so it can read and insert for all of them in a few
statements. When that raises anything but a database failure (one item's problem: its device
vanished, a unique key raced), its transaction is rolled back and each item is written again alone,
in its own SAVEPOINT of a new transaction, so a failing item fails alone and only its caller sees the
error. A database failure (full disk, lost file, lost server) aborts the whole batch: nothing of it
is stored, and every caller gets the error (503, the agents retry). Nobody is answered before the
commit that holds their write has returned.

A batch that follows a batch of several items first gathers for up to ``gather_seconds`` (or until
``max_batch``): on a fast disk a commit takes a fraction of a millisecond, so without waiting each
batch took the few reports the event loop had finished meanwhile (about 6 under
bench/collector_ingest.py's load), and the per-batch statements and commit dominated the
committer's CPU (issue 13). A batch after a lone item starts at once, so a quiet collector adds no delay.
The committer sleeps through the gathering once, woken early only by the write that fills the batch:
waiting on the queue woke it (and had it take the GIL from the event loop) for every write that
arrived meanwhile.

Callers on an event loop use :meth:`GroupCommit.write`: the committer wakes each loop once per batch
(one ``call_soon_threadsafe``), not once per item as awaiting each item's future through
``asyncio.wrap_future`` does; under load that per-item wake-up (a self-pipe write in the committer,
a callback and a future copy on the loop) was a visible share of the serving process's CPU (issue 13).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Item = TypeVar("Item")
Result = TypeVar("Result")
Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[None]"]
"""Where a :meth:`GroupCommit.write` caller waits: its loop, and the future set once its item is answered."""
GATHER_SECONDS = 0.006
"""How long a batch after a batch of several items waits for more: about a dozen reports' worth of the
serving event loop's time here; a small part of an agent's request, and of the p99 target (100 ms).
Against 2 ms, under bench/collector_ingest.py's load the committer thread's CPU per report fell from
~170 to 120-155 us and SQLite's writes from ~15 to ~13 KB per report (fewer, larger commits; issue 13)."""


class GroupCommit(Generic[Item, Result]):
    """One committer thread writing queued items with ``write`` in shared transactions from ``begin()``."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Connection]],
        write: Callable[[Connection, list[Item]], list[Result]],
        max_batch: int = 256,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self._begin = begin
        self._write = write
        self.max_batch = max_batch
        self.gather_seconds = gather_seconds
        # SimpleQueue: a put is one C call; queue.Queue's Python-level lock and condition were ~5% of
        # the ingest process's GIL time under load (py-spy --gil, issue 13).
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result], Waiter | None] | None] = queue.SimpleQueue()
        self._filled = threading.Event()  # set by the write that fills the batch being gathered
        self._thread = threading.Thread(target=self._loop, name="farmwatch-group-commit", daemon=True)
        self._thread.start()
        self.batches = 0  # committed transactions, for tests and benchmarks
        self.steps = 0

    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item`` for the next shared transaction; the future completes once that commit is done."""
        done: Future[Result] = Future()
        self._put((item, done, None))
        return done

    async def write(self, item: Item) -> Result:
        """Write ``item`` in the next shared transaction from an event loop; returns (or raises) once that
        commit is done. Cancelled before its batch begins, the item is left out, as with :meth:`submit`."""
        loop = asyncio.get_running_loop()
        done: Future[Result] = Future()
        answered: asyncio.Future[None] = loop.create_future()
        self._put((item, done, (loop, answered)))
        try:
            await answered
        except asyncio.CancelledError:
            done.cancel()  # only succeeds before its batch began: then it is never written
            raise
        return done.result()

    def run(self, item: Item) -> Result:
        """Write ``item`` in the next shared transaction; returns (or raises) once that commit is done."""
        return self.submit(item).result()

    def close(self) -> None:
        """Finish what is queued, then stop the committer thread."""
        self._queue.put(None)
        self._filled.set()  # no need to gather any longer
        self._thread.join(timeout=30)

    def _put(self, entry: tuple[Item, Future[Result], Waiter | None]) -> None:
        self._queue.put(entry)
        if self._queue.qsize() >= self.max_batch - 1:  # with the batch's first item taken, it is full
            self._filled.set()  # (set while no batch gathers too: each gathering clears it first)

    def _loop(self) -> None:
        last_size = 0
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            if last_size > 1:  # writers were concurrent last time: more are probably on their way
                self._filled.clear()
                if self._queue.qsize() < self.max_batch - 1:
                    self._filled.wait(self.gather_seconds)
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            last_size = len(batch)
            # A caller that gave up (its request was cancelled) before the batch began is left out;
            # from here on a future cannot be cancelled, so each one is answered exactly once.
            batch = [entry for entry in batch if entry[1].set_running_or_notify_cancel()]
            if batch:
                self._commit(batch)
                _wake([waiter for _, _, waiter in batch if waiter is not None])

    def _commit(self, batch: list[tuple[Item, Future[Result], Waiter | None]]) -> None:
        items = [item for item, _, _ in batch]
        try:
            outcomes = self._write_all(items)
        except BaseException as failure:  # noqa: BLE001 - every waiting caller must hear of it
            for _, done, _ in batch:
                done.set_exception(failure)
            return
        self.batches += 1
        self.steps += len(batch)
        for (_, done, _), (ok, value) in zip(batch, outcomes):
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

    def _write_all(self, items: list[Item]) -> list[tuple[bool, Any]]:
        return write_in_transactions(self._begin, self._write, items)


def write_in_transactions(
    begin: Callable[[], AbstractContextManager[Connection]],
    write: Callable[[Connection, list[Item]], list[Result]],
    items: list[Item],
) -> list[tuple[bool, Any]]:
    """Write ``items`` with ``write`` in one transaction from ``begin()``: one (ok, result or error) per
    item, in order. One item's problem is found by writing each again alone, and fails alone; a
    database failure (``OperationalError``) raises, nothing of the batch stored."""
    # The whole batch first, with no SAVEPOINT around it (SAVEPOINT and RELEASE through SQLAlchemy
    # cost ~77 us of the committer's CPU per batch here, issue 13): when it fails, its transaction
    # is rolled back whole, and the items are written again, each alone, in a new transaction.
    try:
        with begin() as tx:
            results = write(tx, items)
        return [(True, result) for result in results]
    except sa.exc.OperationalError:
        raise  # the database itself failed: the whole batch goes
    except Exception:  # noqa: BLE001 - one item's problem: find whose, writing each alone
        if len(items) == 1:
            raise
    outcomes: list[tuple[bool, Any]] = []
    with begin() as tx:
        for item in items:
            try:
                with tx.begin_nested():
                    outcomes.append((True, write(tx, [item])[0]))
            except sa.exc.OperationalError:
                raise
            except Exception as failure:  # noqa: BLE001 - handed to the one caller it belongs to
                outcomes.append((False, failure))
    return outcomes


def _wake(waiters: list[Waiter]) -> None:
    """Tell every :meth:`GroupCommit.write` caller of a batch that its answer is set: one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, answered in waiters:
        by_loop.setdefault(loop, []).append(answered)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_answer, futures)
        except RuntimeError:  # the loop closed meanwhile (shutdown): nobody is waiting there any more
            pass


def _answer(futures: list[asyncio.Future[None]]) -> None:
    for answered in futures:
        if not answered.done():  # a caller cancelled after its batch began: its item was written all the same
            answered.set_result(None)
