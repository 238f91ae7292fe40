"""Group commit: concurrent report writes share one SQLite transaction, so one fsync acknowledges many.

With ``synchronous=FULL`` every commit waits for the disk. Writers hand their step (a function of
the open transaction) to one committer thread; while it commits a batch, the next requests queue,
and the next batch takes them all (at most ``max_batch``). Each step runs in its own SAVEPOINT, so a
step that raises (an unknown device) is rolled back alone and only its caller sees the error. A
database error (full disk, lost file) aborts the whole batch: nothing of it is stored, and every
caller gets the error (503, the agents retry). Nobody is answered before the commit that holds
their write has returned.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Result = TypeVar("Result")
Step = Callable[[Connection], Any]


class GroupCommit:
    """One committer thread running queued steps in shared transactions from ``begin()``."""

    def __init__(self, begin: Callable[[], AbstractContextManager[Connection]], max_batch: int = 64) -> None:
        self._begin = begin
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[Step, Future[Any]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="farmwatch-group-commit", daemon=True)
        self._thread.start()
        self.batches = 0  # committed transactions, for tests and benchmarks
        self.steps = 0

    def run(self, step: Callable[[Connection], Result]) -> Result:
        """Run ``step`` in the next shared transaction; returns (or raises) once that commit is done."""
        done: Future[Result] = Future()
        self._queue.put((step, done))
        return done.result()

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
            self._commit(batch)

    def _commit(self, batch: list[tuple[Step, Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._begin() as tx:
                for step, _ in batch:
                    try:
                        with tx.begin_nested():
                            outcomes.append((True, step(tx)))
                    except sa.exc.OperationalError:
                        raise  # the database itself failed: the whole batch goes
                    except Exception as failure:  # noqa: BLE001 - handed to the one caller it belongs to
                        outcomes.append((False, failure))
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
