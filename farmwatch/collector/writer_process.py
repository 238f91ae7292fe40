"""``serve``'s report writes in a child process of its own, fed straight from the event loop (issue 13).

In the serving process, the group commit's committer thread (:mod:`farmwatch.collector.group_commit`)
shared one GIL with the event loop that answers agents: under ``bench/collector_ingest.py``'s load
the serving process was bound by that one GIL (the loop ~240 us of CPU a report, the committer
~90-230), and every batch handed the GIL back and forth between them. With the commit left out
altogether the same loop answered about twice as many reports a second. Here the event loop sends
each batch to a child process over a socket pair and reads the child's answer as it comes; no
thread of the serving process takes part, and nothing of a write holds its GIL but packing the
batch (one orjson dump a report, one pickle a batch) and setting each caller's future.

What stays as it was:

- **acknowledged means stored**: a caller's future is set only from the child's answer, which it
  sends after the commit that holds the batch (:meth:`farmwatch.collector.storage.Storage.write_report_batch`);
- **exactly once**: a child that dies with a batch in flight (it may have committed it) has that
  batch and every queued report answered "unavailable" (503); the agents keep them and send them
  again, and a resend of a stored (device, seq) with the same digest is a duplicate, stored once;
- **one report's problem fails alone**, a database failure fails the whole batch (503), as in
  :func:`farmwatch.collector.group_commit.write_in_transactions`, which the child runs;
- **batches**: the child writes one at a time, in the order sent (SQLite has one writer; on
  PostgreSQL a replica's reports share commits as before); what queues meanwhile is the next batch,
  at most ``max_batch`` reports (:data:`IN_FLIGHT`).

The child is started with the app. One that dies is logged and counted
(``farmwatch_writer_restarts_total``) and started again by the next write, or, within
``RESTART_SECONDS`` of the last start, that write is answered 503. The child exits when its socket
closes: the serving process stopped or died.
"""

from __future__ import annotations

import asyncio
import collections
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

import orjson
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter

from farmwatch.collector.periodic import become_child
from farmwatch.collector.storage import ArrivingReport, StoredReport

IN_FLIGHT = 2
"""Batches sent and not yet answered, at most: the child reads the next batch as soon as it answered
one, without waiting for the event loop to read that answer and send again (loop and child each on a
core: 3,305 against 3,524 and 3,471 reports/s in bench/collector_ingest.py, SQLite, one in flight
against two). Each batch takes what queued meanwhile; none waits to gather more, as the group commit's
does, since the child's per-batch work is no longer the serving process's (gathering 2 ms: 2,927/s; 6 ms: 1,872/s)."""
RESTART_SECONDS = 2.0
"""A write within this long of the child's last start, after it died, is refused (503), not a new start."""
STOP_SECONDS = 25.0
"""How long a stopping app waits for the child to finish and exit before killing it."""
_HEADER = struct.Struct("!i")  # multiprocessing.connection's frame: a big-endian 4-byte length, then the bytes
Reply = tuple[str, Any]
"""The child's answer to one batch: ("written", [(stored?, outcome or error), ...]) or ("failed", error)."""

log = logging.getLogger(__name__)


class WriterGone(sa.exc.OperationalError):
    """The writer process ended (or is being started again): the report was not acknowledged; send it again."""

    def __init__(self, why: str) -> None:
        super().__init__(None, None, ConnectionError(why))


class WriterProcess:
    """The serving process's side: :meth:`write_report` on its event loop, the child writing."""

    def __init__(self, url: str, registry: CollectorRegistry, max_batch: int = 256) -> None:
        self.url = url
        self.max_batch = max_batch
        self.restarts = Counter("farmwatch_writer_restarts",
                                "Times the report writer's child process died and was started again.", registry=registry)
        self.batches = 0  # answered batches, for tests and benchmarks
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._child: BaseProcess | None = None
        self._transport: asyncio.Transport | None = None
        self._started = float("-inf")
        self._stopping = False
        self._pending: list[tuple[ArrivingReport, asyncio.Future[StoredReport]]] = []
        self._in_flight: collections.deque[list[asyncio.Future[StoredReport]]] = collections.deque()

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

    async def write_report(self, arriving: ArrivingReport) -> StoredReport:
        """Store ``arriving`` in the child's next batch; returns once the commit that holds it is done.
        Cancelled before its batch is sent, the report is left out."""
        if self._transport is None:
            await self._start_again()
        answered: asyncio.Future[StoredReport] = asyncio.get_running_loop().create_future()
        self._pending.append((arriving, answered))
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
        if self._stopping or time.monotonic() - self._started < RESTART_SECONDS:
            raise WriterGone("the report writer process is being started again")
        old, self._child = self._child, None
        if old is not None:
            old.kill()  # gone already, or past saving: its socket closed
            await asyncio.to_thread(old.join)
        await self._start_child()

    def _send_when_ready(self) -> None:
        while self._transport is not None and self._pending and len(self._in_flight) < IN_FLIGHT:
            self._send()

    def _send(self) -> None:
        assert self._transport is not None
        taken, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        batch = [(item, answered) for item, answered in taken if not answered.cancelled()]
        if not batch:
            return
        payload = pickle.dumps([_packed(item) for item, _ in batch], protocol=pickle.HIGHEST_PROTOCOL)
        self._transport.writelines([_HEADER.pack(len(payload)), payload])
        self._in_flight.append([answered for _, answered in batch])

    def _answered(self, reply: Reply) -> None:
        waiting = self._in_flight.popleft()
        self.batches += 1
        kind, value = reply
        if kind == "failed":
            for answered in waiting:
                if not answered.done():  # a caller that gave up after its batch was sent: written all the same
                    answered.set_exception(value)
        else:
            for answered, (ok, outcome) in zip(waiting, value):
                if not answered.done():
                    if ok:
                        answered.set_result(outcome)
                    else:
                        answered.set_exception(outcome)
        self._send_when_ready()

    def _lost(self) -> None:
        self._transport = None
        waiting = [answered for batch in self._in_flight for answered in batch] + [answered for _, answered in self._pending]
        self._in_flight.clear()
        self._pending = []
        gone = WriterGone("the report writer process ended")
        for answered in waiting:
            if not answered.done():
                answered.set_exception(gone)
        if not self._stopping:
            pid = self._child.pid if self._child is not None else None
            log.error("the report writer process %s ended; %d reports not acknowledged (the agents send them again)",
                      pid, len(waiting))
            self.restarts.inc()


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


def _packed(item: ArrivingReport) -> tuple[Any, ...]:
    # The record as JSON: orjson dumps a report in a few microseconds, where pickling its dicts cost more.
    return (orjson.dumps(item.record), item.digest, item.received_at, item.size, item.limits, item.token_sha256)


def _pickled(reply: Reply) -> bytes:
    """``reply`` pickled; an error that does not pickle is sent as its kind and message, so a database
    failure still reads as one (a 503 naming it) and anything else as the error it was."""
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - some driver's error objects do not pickle
        kind, value = reply
        if kind == "failed":
            return pickle.dumps((kind, _portable(value)))
        return pickle.dumps((kind, [(ok, outcome if ok else _portable(outcome)) for ok, outcome in value]))


def _portable(failure: BaseException) -> Exception:
    message = f"{type(failure).__name__}: {failure}"
    if isinstance(failure, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return sa.exc.OperationalError(None, None, RuntimeError(message))
    return RuntimeError(message)


def run_child(url: str, parent: Connection) -> None:
    """The child's whole life: open the store, write each batch the parent sends and answer it, until
    the parent's socket closes."""
    from farmwatch.collector.gc_tuning import settle_long_lived
    from farmwatch.collector.storage import Storage

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
            batch = [ArrivingReport(orjson.loads(record), *rest) for record, *rest in pickle.loads(message)]
            reply: Reply
            try:
                reply = ("written", storage.write_report_batch(batch))
            except Exception as failure:  # noqa: BLE001 - every report of the batch hears of it
                reply = ("failed", failure)
            try:
                parent.send_bytes(_pickled(reply))
            except OSError:
                return  # the serving process is gone; what it did not hear of, its agents send again
    finally:
        storage.close()
