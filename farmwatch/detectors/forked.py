"""Tasks shared between this process and forked helpers, each task taken once by whichever process
is free next (a counter in shared memory): a process slowed by other work on the machine, or busy
with something else first, takes fewer, so all of them finish at about the same time.

Helpers are forked (the tasks' inputs are shared copy-on-write, never pickled). A helper pickles
each result as soon as its task is done, into a temporary file of its own, and this process reads
it between its own tasks: pickling and unpickling are spread over the tasks rather than left to
the end, when this process would wait for them (the pipe carries only each result's task number,
then the word that the helper is done, or its failure). A task's failure stops every process
taking more and is raised by :meth:`SharedTasks.results`. Where the system cannot fork, this
process runs every task.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Generic, TypeVar

Result = TypeVar("Result")


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


@dataclass
class _Helper:
    process: Any  # multiprocessing's forked Process
    receiver: Any  # its pipe's reading end: a task number per result spooled, then None, or its failure
    spool: IO[bytes]  # this process's reading end of the helper's spool: (task, result) pickled one after another
    finished: bool = False


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
            descriptor, name = tempfile.mkstemp(prefix="farmwatch-results-")
            try:  # two opens: the helper's writing and this process's reading each keep their own offset
                writer, reader = os.fdopen(descriptor, "wb"), open(name, "rb")
            finally:
                os.unlink(name)
            receiver, sender = forking.Pipe(duplex=False)
            process = forking.Process(target=self._send_taken, args=(sender, writer), daemon=True)
            process.start()
            sender.close()
            writer.close()
            self._helpers.append(_Helper(process, receiver, reader))

    def results(self) -> dict[int, Result]:
        """Every task's result, by task: this process takes tasks until none is left, reading the
        results the helpers have spooled after each of its own (so that little is left to read at
        the end), then the rest. Raises the first failure of a task (this process's first)."""
        done: dict[int, Result] = {}
        try:
            for task, result in self._each_taken():
                done[task] = result
                self._read_spooled(done, wait=False)
            self._read_spooled(done, wait=True)
        finally:
            self.stop()
        return done

    def _read_spooled(self, done: dict[int, Result], wait: bool) -> None:
        """Add the results the helpers have spooled to ``done``; with ``wait``, every result, once
        each helper has finished. Raises a helper's failure."""
        for helper in self._helpers:
            while not helper.finished and (wait or helper.receiver.poll()):
                message = helper.receiver.recv()
                if isinstance(message, BaseException):
                    raise message
                if message is None:
                    helper.finished = True
                    helper.process.join()
                    continue
                task, result = pickle.load(helper.spool)
                done[task] = result

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
        """A forked helper's work: each result spooled as its task ends and its number sent; then
        None (or the failure)."""
        try:
            for task, result in self._each_taken():
                pickle.dump((task, result), spool, protocol=pickle.HIGHEST_PROTOCOL)
                spool.flush()
                sender.send(task)
            outcome: BaseException | None = None
        except BaseException as failure:  # sent whole: results() raises it
            outcome = failure
        sender.send(outcome)
