"""One periodic background worker for the collector: a daemon thread that runs a step every interval.

The reducer (:class:`farmwatch.collector.rollups.Reducer`), the retention job
(:class:`farmwatch.collector.retention.RetentionJob`) and the scorer
(:class:`farmwatch.collector.scoring.Scorer`) all derive from :class:`PeriodicWorker`, which owns
what they share: ``start``, ``stop`` (waits for a step in progress to finish), the wait between
steps, and a step that raises is logged (with its traceback) and counted, never ending the thread:
the next step is the retry. :class:`SupervisedChild` is such a worker whose step is a child process
(serve's reducer and scoring processes: :mod:`farmwatch.collector.reducer_process`,
:mod:`farmwatch.collector.scoring_process`), started again when it dies.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import Counter

JOIN_SECONDS = 30.0
"""How long ``stop`` waits for a step in progress (a batch is finished and stored, not cut)."""


class PeriodicWorker(ABC):
    """Calls :meth:`step` in a daemon thread named ``name``: first after ``next_delay(None)``, then
    ``next_delay(seconds the last step took)`` after each step ends (default: ``interval_seconds``
    each time). A step that raises is logged as ``failure_message`` with its traceback and counted in
    ``failures`` (when given); the thread goes on. Steps that loop check :attr:`stopping`."""

    def __init__(self, name: str, interval_seconds: float, failure_message: str,
                 failures: Counter | None = None) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.failure_message = failure_message
        self.failures = failures
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def step(self) -> None:
        """One run of the work."""

    def next_delay(self, last_step_seconds: float | None) -> float:
        """Seconds to wait before the next step (``last_step_seconds`` None: before the first)."""
        return self.interval_seconds

    def before_first_step(self) -> None:
        """Runs once in the thread, before the first wait (default: nothing)."""

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called: a step that loops ends early."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread (again, after a :meth:`stop`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Tell the thread to stop after the step in progress, without waiting (:meth:`stop` waits)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop the thread, letting a step in progress finish (at most ``JOIN_SECONDS``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_SECONDS)
            self._thread = None

    def _run(self) -> None:
        self.before_first_step()
        took: float | None = None
        while not self._stop.wait(self.next_delay(took)):
            started = time.monotonic()
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a failed step must not end the worker; the next one retries
                logging.getLogger(type(self).__module__).exception(self.failure_message)  # the worker's own logger
                if self.failures is not None:
                    self.failures.inc()
            took = time.monotonic() - started


RESTART_SECONDS = 2.0
"""Pause before a supervised child that exited is started again."""
REPORT_SECONDS = 1.0
"""How often a supervised child sends its news (its metrics) up its pipe."""
STOP_SECONDS = JOIN_SECONDS - 5
"""A stopping child may finish its batch (one transaction), then is killed."""


PR_SET_NAME = 15  # <linux/prctl.h>: the thread's name, /proc/<pid>/comm, what ps and top show


def become_child(name: str) -> None:
    """What each of serve's child processes does first: ignore Ctrl-C, which reaches the whole process
    group (the parent stops its children), and take ``name`` as its process name, so ``ps`` and
    ``top`` tell the children apart (Linux keeps 15 bytes of it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15])


def report_until_stopped(parent: Connection, collect: Callable[[], list[Any]], work: PeriodicWorker,
                         close: Callable[[], None]) -> None:
    """A supervised child's main loop once ``work`` is started: send ``collect()`` (its metrics) up
    ``parent`` every REPORT_SECONDS until the parent says stop or is gone, then stop ``work`` and
    ``close`` what it used."""
    try:
        while True:
            parent.send(collect())
            if parent.poll(REPORT_SECONDS):
                break  # "stop" from the parent, or EOF: the parent is gone
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        work.stop()
        close()


class SupervisedChild(PeriodicWorker):
    """Runs ``target(*args, pipe)`` in a child process (``spawn``: no fork of a threaded server), each
    step starting one and following it until it exits (then, ``RESTART_SECONDS`` later, the next
    step starts another: counted in ``restarts`` and logged) or the worker stops. The child sends
    messages up the pipe (:meth:`received` takes each); it must end when it reads anything from the
    pipe ("stop") or finds it closed (the parent died), and is killed ``STOP_SECONDS`` after
    "stop" if it has not."""

    def __init__(self, name: str, target: Callable[..., None], args: tuple[Any, ...], restarts: Counter) -> None:
        super().__init__(f"{name}-supervisor", RESTART_SECONDS, f"supervising the {name} process failed; starting it again")
        self.child_name = name
        self.target = target
        self.args = args
        self.restarts = restarts
        self._context = multiprocessing.get_context("spawn")
        self.child: BaseProcess | None = None

    def received(self, message: Any) -> None:
        """One message the child sent (default: ignored)."""

    def next_delay(self, last_step_seconds: float | None) -> float:
        return 0.0 if last_step_seconds is None else RESTART_SECONDS  # the first child at once

    def step(self) -> None:
        ours, theirs = self._context.Pipe()
        child = self._context.Process(target=self.target, args=(*self.args, theirs), name=self.child_name, daemon=True)
        child.start()
        theirs.close()
        self.child = child
        self._follow(child, ours)
        if not self.stopping:
            logging.getLogger(type(self).__module__).error(
                "the %s process %s exited (code %s); starting it again in %.0f s",
                self.child_name, child.pid, child.exitcode, RESTART_SECONDS)
            self.restarts.inc()

    def _follow(self, child: BaseProcess, pipe: Connection) -> None:
        """Take the child's messages until it exits or we stop; then see it ends."""
        try:
            while not self.stopping:
                if pipe.poll(REPORT_SECONDS):
                    self.received(pipe.recv())
                elif not child.is_alive():
                    break
        except (EOFError, OSError):
            pass  # the child is gone
        try:
            pipe.send("stop")
        except OSError:
            pass
        child.join(STOP_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()
        pipe.close()
