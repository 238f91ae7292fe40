"""``serve``'s report writes in a child process of its own, fed straight from the event loop (issue 13).

In the serving process, the group commit's committer thread (:mod:`farmwatch.collector.group_commit`)
shared one GIL with the event loop that answers agents: under ``bench/collector_ingest.py``'s load
the serving process was bound by that one GIL (the loop ~240 us of CPU a report, the committer
~90-230), and every batch handed the GIL back and forth between them. With the commit left out
altogether the same loop answered about twice as many reports a second. Here the event loop reads
each report's body and sends it, with what the request told (:class:`farmwatch.collector.ingest.Received`),
to a child process over a socket pair, a batch at a time; the child parses each report strictly,
makes its ingest record and digest (:func:`farmwatch.collector.ingest.arriving`: a third of the
loop's time per report before), stores the batch, and answers. No thread of the serving process
takes part: what a report costs its GIL beyond reading the body is its share of one pickle and
setting its caller's future.

What stays as it was:

- **acknowledged means stored**: a caller's future is set only from the child's answer, which it
  sends after the commit that holds the batch (:meth:`farmwatch.collector.storage.Storage.write_report_batch`);
- **exactly once**: a child that dies with a batch in flight (it may have committed it) has that
  batch and every queued report answered "unavailable" (503); the agents keep them and send them
  again, and a resend of a stored (device, seq) with the same digest is a duplicate, stored once;
- **one report's problem fails alone**, a database failure fails the whole batch (503), as in
  :func:`farmwatch.collector.group_commit.write_in_transactions`, which the child runs;
- **batches**: one in flight at a time (SQLite has one writer; on PostgreSQL a replica's reports
  share commits as before); what queues while the child writes one is the next, at most
  ``max_batch`` reports, sent as soon as the answer is read. None waits to gather more, as the group
  commit's batches do: that saved the serving process per-batch work, which is the child's now
  (gathering 2 ms: 2,927 reports/s, 6 ms: 1,872/s, none: 3,579/s in bench/collector_ingest.py,
  SQLite). Two in flight, so that the child never waits for the loop to read an answer, made
  smaller batches that cost the child more per report: 3,426 and 3,036 reports/s against 3,439 and
  3,704 with one.

The child is started with the app. One that dies is logged and counted
(``farmwatch_writer_restarts_total``) and started again ``RESTART_SECONDS`` later (or by a report
arriving after that); meanwhile reports are answered 503 and ``/healthz`` says degraded. The child
exits when its socket closes: the serving process stopped or died.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import socket
import struct
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter

from farmwatch.collector.ingest import Received, Rejected, arriving
from farmwatch.collector.periodic import become_child
from farmwatch.collector.storage import ArrivingReport, Storage, StoredReport
from farmwatch.errors import FarmwatchError

RESTART_SECONDS = 2.0
"""How long after the child died it is started again; reports meanwhile are refused (503)."""
STOP_SECONDS = 25.0
"""How long a stopping app waits for the child to finish and exit before killing it."""
_HEADER = struct.Struct("!i")  # multiprocessing.connection's frame: a big-endian 4-byte length, then the bytes
Written = tuple[StoredReport, int]
"""A stored (or resent, refused at the commit...) report's outcome, and its seq."""
Reply = list[tuple[bool, Any]]
"""The child's answer to one batch: per report, in order, (True, :data:`Written`) or (False, the error)."""

log = logging.getLogger(__name__)


class WriterGone(FarmwatchError, sa.exc.OperationalError):
    """The writer process ended (or is being started again): the report was not acknowledged; send it
    again. An ``OperationalError`` as well, so the report route answers it as any store that cannot
    write now: 503 with Retry-After."""

    def __init__(self, why: str) -> None:
        super().__init__(None, None, ConnectionError(why))


class WriterProcess:
    """The serving process's side: :meth:`write_report` on its event loop, the child writing."""

    def __init__(self, url: str, registry: CollectorRegistry, max_batch: int = 256) -> None:
        self.url = url
        self.max_batch = max_batch
        self.restarts = Counter("farmwatch_writer_restarts",
                                "Times the report writer's child process died and was started again.", registry=registry)
        self.batches = 0  # batches the child answered (tests: concurrent reports share one)
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._child: BaseProcess | None = None
        self._transport: asyncio.Transport | None = None
        self._started = float("-inf")
        self._stopping = False
        self._starting = asyncio.Lock()
        self._restarting: asyncio.Future[None] | None = None  # a start after the child died, while it runs
        self._pending: list[tuple[Received, asyncio.Future[Written]]] = []
        self._in_flight: list[asyncio.Future[Written]] | None = None  # the batch the child is writing

    @property
    def running(self) -> bool:
        """Whether a child is there to write (False after it died, until it is started again)."""
        return self._transport is not None

    @property
    def child(self) -> BaseProcess | None:
        """The child process of the moment (None before :meth:`start`)."""
        return self._child

    async def start(self) -> None:
        """Start the child (the app's startup); reports sent before it is ready wait in its socket."""
        self._stopping = False
        await self._start_child()

    async def stop(self) -> None:
        """Close the child's socket (it finishes its batch and exits) and wait for it (the app's shutdown)."""
        self._stopping = True
        if self._transport is not None:
            self._transport.close()
        child, self._child = self._child, None
        if child is not None:
            await asyncio.to_thread(child.join, STOP_SECONDS)
            if child.is_alive():
                child.kill()
                await asyncio.to_thread(child.join)

    async def write_report(self, received: Received) -> Written:
        """Parse and store ``received`` in the child's next batch (:func:`farmwatch.collector.ingest.arriving`:
        a refusal raises :class:`~farmwatch.collector.ingest.Rejected`); returns once the commit that holds
        it is done. Cancelled before its batch is sent, the report is left out."""
        if self._transport is None:
            await self._start_again()
        answered: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._pending.append((received, answered))
        self._send_when_ready()
        return await answered

    # --- the child's socket ---------------------------------------------------------------

    async def _start_child(self) -> None:
        ours, theirs = self._context.Pipe()
        child = self._context.Process(target=run_child, args=(self.url, theirs), name="farmwatch-writer", daemon=True)
        child.start()
        theirs.close()
        connection = socket.socket(fileno=os.dup(ours.fileno()))  # the socket pair's end, now asyncio's
        ours.close()
        connection.setblocking(False)
        self._child, self._started = child, time.monotonic()
        self._transport, _ = await asyncio.get_running_loop().create_unix_connection(
            lambda: _Answers(self), sock=connection)

    async def _start_again(self) -> None:
        async with self._starting:  # reports arriving meanwhile wait for this start, not start their own
            if self._transport is not None:
                return
            if self._stopping or time.monotonic() - self._started < RESTART_SECONDS:
                raise WriterGone("the report writer process is being started again")
            old, self._child = self._child, None
            if old is not None:
                old.kill()  # gone already, or past saving: its socket closed
                await asyncio.to_thread(old.join)
            await self._start_child()

    def _send_when_ready(self) -> None:
        while self._transport is not None and self._pending and self._in_flight is None:
            self._send()  # sends the next batch, or drops what was cancelled before it was sent

    def _send(self) -> None:
        assert self._transport is not None
        taken, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        batch = [(item, answered) for item, answered in taken if not answered.cancelled()]
        if not batch:
            return
        payload = pickle.dumps([item for item, _ in batch], protocol=pickle.HIGHEST_PROTOCOL)
        self._transport.writelines([_HEADER.pack(len(payload)), payload])
        self._in_flight = [answered for _, answered in batch]

    def _answered(self, reply: Reply) -> None:
        waiting, self._in_flight = self._in_flight or [], None
        self.batches += 1
        for answered, (ok, outcome) in zip(waiting, reply):
            if not answered.done():  # a caller that gave up after its batch was sent: written all the same
                if ok:
                    answered.set_result(outcome)
                else:
                    answered.set_exception(outcome)
        self._send_when_ready()

    def _lost(self) -> None:
        self._transport = None
        waiting = (self._in_flight or []) + [answered for _, answered in self._pending]
        self._in_flight, self._pending = None, []
        gone = WriterGone("the report writer process ended")
        for answered in waiting:
            if not answered.done():
                answered.set_exception(gone)
        if not self._stopping:
            pid = self._child.pid if self._child is not None else None
            log.error("the report writer process %s ended; %d reports not acknowledged (the agents send them "
                      "again); starting it again in %.0f s", pid, len(waiting), RESTART_SECONDS)
            self.restarts.inc()
            asyncio.get_running_loop().call_later(RESTART_SECONDS, self._restart)

    def _restart(self) -> None:
        """Start the child again after it died, whether or not a report asks for it meanwhile."""
        if self._transport is not None or self._stopping:
            return  # a report started it already
        self._restarting = asyncio.ensure_future(self._start_again())
        self._restarting.add_done_callback(_log_failure)


def _log_failure(started: asyncio.Future[None]) -> None:
    if not started.cancelled() and started.exception() is not None:
        log.error("starting the report writer process again failed", exc_info=started.exception())


class _Answers(asyncio.Protocol):
    """Reads the child's framed answers and hands each to its :class:`WriterProcess`."""

    def __init__(self, writer: WriterProcess) -> None:
        self.writer = writer
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                return
            reply = pickle.loads(self.buffer[_HEADER.size:_HEADER.size + size])
            del self.buffer[:_HEADER.size + size]
            self.writer._answered(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.writer._lost()


def _pickled(reply: Reply) -> bytes:
    """``reply`` pickled, each error in a form the serving process can unpickle (:func:`_portable`)."""
    return pickle.dumps([(ok, outcome if ok else _portable(outcome)) for ok, outcome in reply],
                        protocol=pickle.HIGHEST_PROTOCOL)


def _portable(failure: BaseException) -> BaseException:
    """``failure`` itself when it survives a pickle round trip; otherwise its kind and message, so a
    database failure still reads as one (a 503 naming it) and anything else as an error (500). An
    error that pickles but cannot be unpickled (its ``__init__`` wants other arguments than its
    ``args``) would otherwise break the serving process's reading of every later answer."""
    try:
        pickle.loads(pickle.dumps(failure, protocol=pickle.HIGHEST_PROTOCOL))
        return failure
    except Exception:  # noqa: BLE001 - some driver's and library's errors do not round-trip
        message = f"{type(failure).__name__}: {failure}"
        if isinstance(failure, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            return sa.exc.OperationalError(None, None, RuntimeError(message))
        return RuntimeError(message)


def run_child(url: str, parent: Connection) -> None:
    """The child's whole life: open the store, write each batch the parent sends and answer it, until
    the parent's socket closes."""
    from farmwatch.collector.gc_tuning import settle_long_lived

    become_child("fw-writer")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     writer: %(message)s")
    storage = Storage.open(url, migrate="check")  # the serving process migrated before it started us
    settle_long_lived()
    try:
        while True:
            try:
                message = parent.recv_bytes()
            except (EOFError, OSError):
                return  # the serving process stopped or died
            reply = _write(storage, pickle.loads(message))
            try:
                parent.send_bytes(_pickled(reply))
            except OSError:
                return  # the serving process is gone; what it did not hear of, its agents send again
    finally:
        storage.close()


def _write(storage: Storage, batch: list[Received]) -> Reply:
    """Parse each report of ``batch`` (a refusal is its answer) and store the rest in one transaction."""
    reply: Reply = [(False, None)] * len(batch)
    prepared: list[tuple[int, ArrivingReport]] = []
    for index, received in enumerate(batch):
        try:
            prepared.append((index, arriving(received)))
        except Rejected as refused:  # 422 naming the fields, 403: that report's answer alone
            reply[index] = (False, refused)
        except Exception as failure:  # noqa: BLE001 - a bug: logged here, with its traceback; that report's 500
            log.exception("making the ingest record of a report of %s failed", received.device_id)
            reply[index] = (False, failure)
    if not prepared:
        return reply
    try:
        written = storage.write_report_batch([report for _, report in prepared])
    except Exception as failure:  # noqa: BLE001 - the database failed: every report stored hears of it
        written = [(False, failure)] * len(prepared)
    for (index, report), (ok, outcome) in zip(prepared, written):
        reply[index] = (True, (outcome, report.record["report"]["seq"])) if ok else (False, outcome)
    return reply
