"""Tasks shared between this process and forked helpers, each task taken once by whichever process
is free next (a counter in shared memory): a process slowed by other work on the machine, or busy
with something else first, takes fewer, so all of them finish at about the same time.

Helpers are forked (the tasks' inputs are shared copy-on-write, never pickled). A helper pickles
each result as soon as its task is done, into a temporary file of its own, so that pickling is
spread over its tasks rather than left to the end, when this process would wait for it; the pipe
carries only the word that it is done, or its failure. A task's failure stops every process
taking more and is raised by :meth:`SharedTasks.results`. Where the system cannot fork, this
process runs every task.
"""

from __future__ import annotations

import multiprocessing
import pickle
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any, Generic, NamedTuple, TypeVar

Result = TypeVar("Result")


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class _Helper(NamedTuple):
    process: Any  # multiprocessing's forked Process
    receiver: Any  # its pipe's reading end: None once done, or its failure
    spool: IO[bytes]  # (task, result) pickled one after another


class SharedTasks(Generic[Result]):
    """Tasks ``0 .. tasks - 1``, each ``run(task)``: ``helpers`` forked processes start taking them
    when this is made; this process joins them in :meth:`results` (or :meth:`stop` ends them)."""

    def __init__(self, tasks: int, run: Callable[[int], Result], helpers: int) -> None:
        self._tasks, self._run = tasks, run
        self._helpers: list[_Helper] = []
        forking = multiprocessing.get_context("fork") if helpers > 0 and can_fork() else None
        if forking is None:
            self._taken: Any = None
            return
        self._taken = forking.Value("i", 0)  # the next task not yet taken
        for _ in range(helpers):
            spool = tempfile.TemporaryFile()
            receiver, sender = forking.Pipe(duplex=False)
            process = forking.Process(target=self._send_taken, args=(sender, spool), daemon=True)
            process.start()
            sender.close()
            self._helpers.append(_Helper(process, receiver, spool))

    def results(self) -> dict[int, Result]:
        """Every task's result, by task: this process takes tasks until none is left, then reads
        the helpers' results. Raises the first failure of a task (this process's first)."""
        try:
            done = dict(self._each_taken())
            for helper in self._helpers:
                outcome = helper.receiver.recv()
                helper.process.join()
                if isinstance(outcome, BaseException):
                    raise outcome
                done.update(_spooled(helper.spool))
        finally:
            self.stop()
        return done

    def stop(self) -> None:
        """End the helpers still at work (after a failure, or when the results are not wanted)."""
        for helper in self._helpers:
            if helper.process.is_alive():
                helper.process.kill()
                helper.process.join()
            helper.spool.close()
        self._helpers = []

    def _each_taken(self) -> Iterator[tuple[int, Result]]:
        """Take the next task not yet taken, run it and give its result, until none is left."""
        if self._taken is None:
            yield from ((task, self._run(task)) for task in range(self._tasks))
            return
        while True:
            with self._taken.get_lock():
                task = self._taken.value
                self._taken.value = task + 1
            if task >= self._tasks:
                return
            try:
                result = self._run(task)
            except BaseException:
                with self._taken.get_lock():
                    self._taken.value = self._tasks  # no process takes another
                raise
            yield task, result

    def _send_taken(self, sender: Any, spool: IO[bytes]) -> None:
        """A forked helper's work: each result spooled as its task ends; then None (or the failure)
        sent back."""
        try:
            for taken in self._each_taken():
                pickle.dump(taken, spool, protocol=pickle.HIGHEST_PROTOCOL)
            spool.flush()
            outcome: BaseException | None = None
        except BaseException as failure:  # sent whole: results() raises it
            outcome = failure
        sender.send(outcome)


def _spooled(spool: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """The (task, result) pairs a helper pickled into ``spool``."""
    spool.seek(0)
    while True:
        try:
            yield pickle.load(spool)
        except EOFError:
            return
