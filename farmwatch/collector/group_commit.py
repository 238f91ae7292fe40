"""Group commit: concurrent writes share one transaction, so one commit (one fsync) acknowledges many.

With SQLite's ``synchronous=FULL`` every commit waits for the disk; on PostgreSQL every commit is
a round trip and a WAL flush. Writers hand an item to one committer thread; while it commits a
batch, the next items queue, and the next batch takes them all (at most ``max_batch``). The batch
goes to ``write(tx, items)`` at once, so it can read and insert for all of them in a few
statements, inside a SAVEPOINT. When that raises anything but a database failure (one item's
problem: its device vanished, a unique key raced), the SAVEPOINT is rolled back and each item is
written alone in its own SAVEPOINT, so a failing item fails alone and only its caller sees the
error. A database failure (full disk, lost file, lost server) aborts the whole batch: nothing of it
is stored, and every caller gets the error (503, the agents retry). Nobody is answered before the
commit that holds their write has returned.
"""

from __future__ import annotations

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


class GroupCommit(Generic[Item, Result]):
    """One committer thread writing queued items with ``write`` in shared transactions from ``begin()``."""

    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Connection]],
        write: Callable[[Connection, list[Item]], list[Result]],
        max_batch: int = 256,
    ) -> None:
        self._begin = begin
        self._write = write
        self.max_batch = max_batch
        # SimpleQueue: a put is one C call; queue.Queue's Python-level lock and condition were ~5% of
        # the ingest process's GIL time under load (py-spy --gil, issue 13).
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="farmwatch-group-commit", daemon=True)
        self._thread.start()
        self.batches = 0  # committed transactions, for tests and benchmarks
        self.steps = 0

    def submit(self, item: Item) -> Future[Result]:
        """Queue ``item`` for the next shared transaction; the future completes once that commit is done."""
        done: Future[Result] = Future()
        self._queue.put((item, done))
        return done

    def run(self, item: Item) -> Result:
        """Write ``item`` in the next shared transaction; returns (or raises) once that commit is done."""
        return self.submit(item).result()

    def close(self) -> None:
        """Finish what is queued, then stop the committer thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            # A caller that gave up (its request was cancelled) before the batch began is left out;
            # from here on a future cannot be cancelled, so each one is answered exactly once.
            batch = [(item, done) for item, done in batch if done.set_running_or_notify_cancel()]
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        try:
            with self._begin() as tx:
                outcomes = self._write_all(tx, items)
        except BaseException as failure:  # noqa: BLE001 - every waiting caller must hear of it
            for _, done in batch:
                done.set_exception(failure)
            return
        self.batches += 1
        self.steps += len(batch)
        for (_, done), (ok, value) in zip(batch, outcomes):
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

    def _write_all(self, tx: Connection, items: list[Item]) -> list[tuple[bool, Any]]:
        try:
            with tx.begin_nested():
                results = self._write(tx, items)
            return [(True, result) for result in results]
        except sa.exc.OperationalError:
            raise  # the database itself failed: the whole batch goes
        except Exception:  # noqa: BLE001 - one item's problem: find whose, writing each alone
            if len(items) == 1:
                raise
        outcomes: list[tuple[bool, Any]] = []
        for item in items:
            try:
                with tx.begin_nested():
                    outcomes.append((True, self._write(tx, [item])[0]))
            except sa.exc.OperationalError:
                raise
            except Exception as failure:  # noqa: BLE001 - handed to the one caller it belongs to
                outcomes.append((False, failure))
        return outcomes
