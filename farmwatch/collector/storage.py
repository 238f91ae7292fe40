"""The collector's store: devices, tokens, enrolments, ingest records, roster, anchors, verdicts.

Everything goes through SQLAlchemy Core with portable SQL, so the same code runs on SQLite (one
collector, WAL mode) and PostgreSQL (N stateless replicas). The only dialect-specific code is in
:func:`open_engine`. Each public method is one transaction: a report is stored whole or not at all.
Times are stored as naive UTC and handed back tz-aware.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from farmwatch.collector import agent_history, driver_sql, quotas, scoring_work
from farmwatch.collector.group_commit import GroupCommit, write_in_transactions
from farmwatch.collector.limits import Limits
from farmwatch.collector.migrate import MigrateMode, ensure_current
from farmwatch.collector.migrate import upgrade as upgrade_schema
from farmwatch.collector.tables import anchors, devices, enrolments, leases, reports, roster, tokens, verdicts
from farmwatch.collector.tables import fleet_index, suppressions
from farmwatch.contract import Anchor, RosterEntry, Verdict, to_wire
from farmwatch.errors import FarmwatchError

Done = TypeVar("Done")


class VerdictListener(Protocol):
    """Told of a scoring run's verdicts inside the transaction that stores them (alerts are written there)."""

    def record(self, tx: Connection, scored: Sequence[Verdict], through_report_id: int) -> list[str]: ...


class StoreError(FarmwatchError, RuntimeError):
    """The database cannot be opened or used; the message says which and why."""


def token_digest(token: str) -> str:
    """SHA-256 hex of a device token: the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


OLDEST_SQLITE = (3, 33, 0)
BUSY_SECONDS = 10.0
"""How long a SQLite connection waits for another's lock before it gives up ("database is locked")."""


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and write transactions that lock early."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the driver we ship
    try:
        on_sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        # A pre-ping (SELECT 1 at each checkout) finds connections a server dropped; a SQLite file has
        # no server, and the ping cost the group commit ~17 us per batch with BEGIN (issue 13).
        engine = sa.create_engine(url, pool_pre_ping=not on_sqlite)
    except (sa.exc.ArgumentError, ImportError) as failure:
        raise StoreError(f"cannot use database URL {url!r}: {failure}") from None
    if on_sqlite:
        version = engine.dialect.loaded_dbapi.sqlite_version_info
        if version < OLDEST_SQLITE:  # the group commit's UPDATE ... FROM (store_report_batch)
            raise StoreError(f"SQLite {'.'.join(map(str, version))} is too old: farmwatch needs "
                             f"{'.'.join(map(str, OLDEST_SQLITE))} or newer")
        _tune_sqlite(engine)
    return engine


def _tune_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below), so the driver must not open transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        _enter_wal(cursor)
        # FULL: a commit is on disk before the 202 goes out. NORMAL in WAL mode may lose the last
        # commits on power loss (https://sqlite.org/pragma.html#pragma_synchronous), and an agent
        # deletes a report from its spool once acknowledged. Cost: bench/collector_ingest.py.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A deferred transaction that reads and then writes cannot wait for another writer
        # (SQLITE_BUSY at once); IMMEDIATE takes the write lock up front and honours busy_timeout.
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enter_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while SQLite answers busy at once. Connections that
    convert a file still in rollback-journal mode (a new store, or one from before WAL) at the same
    moment are told SQLITE_BUSY without waiting out the busy timeout: six threads opening a new file
    together failed 20 of 1,800 opens so, and a collector's store once failed to open in CI so."""
    deadline = time.monotonic() + BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as failure:
            if failure.sqlite_errorname != "SQLITE_BUSY" or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


@dataclass(frozen=True)
class Enrolment:
    device_id: str
    next_seq: int
    renewal: bool


@dataclass(frozen=True)
class StoredReport:
    """Outcome of :meth:`Storage.add_report`: ``new`` False means the same report was already there."""

    new: bool
    conflict: bool
    retry_after: float | None = None  # set when the device's quota ([limits]) refused it: nothing stored
    revoked: bool = False  # the request's token was revoked before the commit: nothing stored
    next_wait: float | None = None  # stored, and the device's quota is now spent for this many seconds


@dataclass(frozen=True)
class ArrivingReport:
    """One ingest record on its way to the store (:meth:`Storage.submit_report`)."""

    record: dict[str, Any]
    digest: str
    received_at: datetime
    size: int = 0  # uncompressed bytes, charged to the device's daily quota
    limits: Limits | None = None  # None: no quota applies
    token_sha256: str | None = None  # the token the report came with, checked again at the commit


class Storage:
    """Typed operations over the collector's tables; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(write=True)
        self._group: GroupCommit[ArrivingReport, StoredReport] | None = None  # report writes, started by the first
        self._group_lock = threading.Lock()
        # Called in each stored verdict's transaction (alerts.AlertRecorder, set by create_app).
        self.verdict_listener: VerdictListener | None = None

    @classmethod
    def open(cls, url: str, migrate: MigrateMode = "auto") -> Storage:
        """Open the database at ``url``: bring its schema to this release's (``"auto"``, under a lock so
        replicas starting together migrate once) or refuse unless it is there (``"check"``)."""
        storage = cls(open_engine(url))
        try:
            if migrate == "auto":
                upgrade_schema(storage.engine)
            else:
                ensure_current(storage.engine)
        except sa.exc.SQLAlchemyError as failure:
            storage.engine.dispose()
            raise StoreError(f"cannot open database {url!r}: {_reason(failure)}") from None
        except FarmwatchError:
            storage.engine.dispose()
            raise
        return storage

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
        self.engine.dispose()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.select(sa.func.count()).select_from(devices))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    # --- enrolment and tokens -------------------------------------------------------------

    def enrol(
        self, *, hardware_id: str, hostname: str, source_ip: str, new_device_id: str, token: str, now: datetime
    ) -> Enrolment:
        """Issue ``token`` to the device with ``hardware_id`` (created as ``new_device_id`` if unknown).

        A known device keeps its id; its earlier tokens are revoked, and ``next_seq`` continues its
        sequence so a reinstalled agent does not collide with its own stored reports.
        """
        # A retry sees the device another replica created between our read and our insert.
        return _once_more_on_conflict(lambda: self._enrol(hardware_id, hostname, source_ip, new_device_id, token, now))

    def _enrol(
        self, hardware_id: str, hostname: str, source_ip: str, new_device_id: str, token: str, now: datetime
    ) -> Enrolment:
        with self._writer.begin() as tx:
            row = tx.execute(
                sa.select(devices.c.device_id, devices.c.last_seq).where(devices.c.hardware_id == hardware_id)
            ).first()
            if row is None:
                device_id, last_seq = new_device_id, 0
                tx.execute(
                    devices.insert().values(
                        device_id=device_id, hardware_id=hardware_id, hostname=hostname, enrolled_at=now
                    )
                )
            else:
                device_id, last_seq = row.device_id, row.last_seq or 0
                tx.execute(devices.update().where(devices.c.device_id == device_id).values(hostname=hostname))
                self._revoke(tx, device_id, now)
            tx.execute(
                tokens.insert().values(token_sha256=token_digest(token), device_id=device_id, issued_at=now)
            )
            tx.execute(
                enrolments.insert().values(
                    device_id=device_id, hostname=hostname, source_ip=source_ip, enrolled_at=now,
                    renewal=row is not None,
                )
            )
        return Enrolment(device_id=device_id, next_seq=last_seq + 1, renewal=row is not None)

    def device_of_token(self, token: str) -> str | None:
        """The device a live (unrevoked) token belongs to, or None."""
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(tokens.c.device_id).where(
                    tokens.c.token_sha256 == token_digest(token), tokens.c.revoked_at.is_(None)
                )
            ).scalar_one_or_none()

    def rotate_token(self, device_id: str, token: str, now: datetime) -> None:
        """Make ``token`` the device's only live token (its others are revoked) in one transaction."""
        with self._writer.begin() as tx:
            self._revoke(tx, device_id, now)
            tx.execute(tokens.insert().values(token_sha256=token_digest(token), device_id=device_id, issued_at=now))

    def revoke(self, device_id: str, now: datetime) -> int:
        """Revoke every live token of ``device_id``; returns how many were live. Unknown device: KeyError."""
        with self._writer.begin() as tx:
            if tx.execute(sa.select(devices.c.device_id).where(devices.c.device_id == device_id)).first() is None:
                raise KeyError(device_id)
            return self._revoke(tx, device_id, now)

    @staticmethod
    def _revoke(tx: Connection, device_id: str, now: datetime) -> int:
        result = tx.execute(
            tokens.update()
            .where(tokens.c.device_id == device_id, tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount

    def enrolment_history(self, device_id: str) -> list[dict[str, Any]]:
        """Every enrolment of a device, oldest first (re-enrolments are a signal worth seeing)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(enrolments.c.hostname, enrolments.c.source_ip, enrolments.c.enrolled_at, enrolments.c.renewal)
                .where(enrolments.c.device_id == device_id)
                .order_by(enrolments.c.id)
            )
            return [
                {"hostname": r.hostname, "source_ip": r.source_ip, "enrolled_at": r.enrolled_at, "renewal": r.renewal}
                for r in rows
            ]

    # --- reports --------------------------------------------------------------------------

    def add_report(
        self, record: dict[str, Any], digest: str, received_at: datetime, size: int = 0, limits: Limits | None = None
    ) -> StoredReport:
        """Store one ingest record and wait for its commit (:meth:`submit_report`)."""
        return self.submit_report(ArrivingReport(record, digest, received_at, size, limits)).result()

    def submit_report(self, arriving: ArrivingReport) -> Future[StoredReport]:
        """Queue one ingest record for the store; the future completes after the commit that holds it.

        Stored unless its (device, seq) is taken: same digest → a duplicate, else a conflict. With
        ``limits``, a new report of ``size`` bytes is charged to the device's quotas, or refused
        (``retry_after``) when they are spent. With ``token_sha256``, the token must still be live
        at the commit (``revoked`` otherwise), so a token revoked since the request's check stores
        nothing. Concurrent reports share one transaction (:mod:`group_commit`): one commit for many
        (with SQLite's synchronous=FULL each commit waits for the disk), a few statements per batch."""
        return self._group_commit().submit(arriving)

    async def write_report(self, arriving: ArrivingReport) -> StoredReport:
        """:meth:`submit_report` awaited on the running event loop, woken once per batch (:meth:`GroupCommit.write`)."""
        return await self._group_commit().write(arriving)

    def write_report_batch(self, batch: list[ArrivingReport]) -> list[tuple[bool, StoredReport | Exception]]:
        """Store ``batch`` in one transaction now, as the group commit does (serve's writer process
        calls this: :mod:`farmwatch.collector.writer_process`): one (stored?, outcome or error) per
        report, in order; a database failure raises and stores none of them."""
        return write_in_transactions(self._writer.begin, store_report_batch, batch)

    def _group_commit(self) -> GroupCommit[ArrivingReport, StoredReport]:
        with self._group_lock:
            if self._group is None:
                self._group = GroupCommit(self._writer.begin, store_report_batch)
            return self._group

    def records(self, since: datetime | None = None, devices: Collection[str] | None = None) -> Iterator[dict[str, Any]]:
        """Ingest records received at or after ``since`` (all when None), oldest first; only those of
        ``devices`` when given (isolating a device whose records break scoring)."""
        query = sa.select(reports.c.record).order_by(reports.c.received_at, reports.c.id)
        if since is not None:
            query = query.where(reports.c.received_at >= since)
        if devices is not None:
            query = query.where(reports.c.device_id.in_(sorted(devices)))
        with self.engine.connect() as connection:
            for (text,) in connection.execution_options(yield_per=1000).execute(query):
                yield orjson.loads(text)  # the scorer reads every record of the lookback: parse fast

    def device_records(self, device_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """One device's ingest records received at or after ``since`` (all when None), oldest first."""
        query = sa.select(reports.c.record).where(reports.c.device_id == device_id).order_by(reports.c.seq)
        if since is not None:
            query = query.where(reports.c.received_at >= since)
        with self.engine.connect() as connection:
            found = [orjson.loads(text) for text in connection.execute(query).scalars()]
        return sorted(found, key=lambda record: record["received_at"])  # seq restarts when an agent resets

    def devices_with_records(self, since: datetime) -> list[str]:
        """Devices with a record received at or after ``since``: the ones a scoring run covers."""
        query = sa.select(reports.c.device_id).where(reports.c.received_at >= since).distinct()
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    # --- roster and anchors ---------------------------------------------------------------

    def replace_roster(self, entries: Sequence[RosterEntry]) -> None:
        """Make ``entries`` the whole roster (the HR export is the full list, not a delta)."""
        self._replace(roster, [{"device_id": e.device_id, "entry": json.dumps(to_wire(e))} for e in entries])

    def replace_anchors(self, entries: Sequence[Anchor]) -> None:
        """Make ``entries`` the whole anchor list."""
        self._replace(anchors, [{"name": e.name, "entry": json.dumps(to_wire(e))} for e in entries])

    def _replace(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        with self._writer.begin() as tx:
            tx.execute(table.delete())
            if rows:
                tx.execute(table.insert(), rows)
            # Verdicts depend on the roster and anchors too: mark them all stale (still readable).
            tx.execute(verdicts.update().values(through_report_id=0))
            seen = tx.execute(sa.select(devices.c.device_id).where(devices.c.last_seen.is_not(None))).scalars()
            scoring_work.mark(tx, list(seen), datetime.now(timezone.utc))

    def roster(self) -> list[RosterEntry]:
        return [RosterEntry.model_validate_json(text) for text in self._entries(roster)]

    def roster_texts(self) -> dict[str, str]:
        """Each device's roster entry as stored (JSON, :meth:`roster` parses it), in the roster's order."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(roster.c.device_id, roster.c.entry).order_by(roster.c.device_id))
            return {device: entry for device, entry in rows}

    def anchors(self) -> list[Anchor]:
        return [Anchor.model_validate_json(text) for text in self._entries(anchors)]

    def _entries(self, table: sa.Table) -> list[str]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(table.c.entry).order_by(*table.primary_key)).scalars())

    # --- verdicts and the analyst view ----------------------------------------------------

    def take_lease(self, name: str, holder: str, now: datetime, seconds: float) -> bool:
        """Hold (or renew) the lease ``name`` until ``now + seconds``; False while another holder has it.

        Replicas sharing one database use this so only one runs the periodic fleet scoring.
        """
        until = now + timedelta(seconds=seconds)

        def take() -> bool:
            with self._writer.begin() as tx:
                row = tx.execute(sa.select(leases).where(leases.c.name == name).with_for_update()).first()
                if row is None:
                    tx.execute(leases.insert().values(name=name, holder=holder, expires_at=until))
                    return True
                if row.holder != holder and row.expires_at > now:
                    return False
                tx.execute(leases.update().where(leases.c.name == name).values(holder=holder, expires_at=until))
                return True

        return _once_more_on_conflict(take)

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean shutdown), if ``holder`` has it."""
        with self._writer.begin() as tx:
            tx.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))

    def last_report_id(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.coalesce(sa.func.max(reports.c.id), 0))).scalar_one())

    def stale_devices(self, seen_since: datetime) -> list[str]:
        """Devices seen since ``seen_since`` whose report is newer than their verdict (or have none).

        Devices silent since then are left out: a scoring run over the lookback window would not
        produce a verdict for them, so asking again could never make them fresh.
        """
        query = (
            sa.select(devices.c.device_id)
            .select_from(devices.outerjoin(verdicts, verdicts.c.device_id == devices.c.device_id))
            .where(
                devices.c.last_seen >= seen_since,
                sa.or_(verdicts.c.device_id.is_(None), verdicts.c.through_report_id < devices.c.last_report_id),
            )
        )
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def save_verdicts(
        self, scored: Sequence[Verdict], through_report_id: int, fleet: Sequence[dict[str, Any]] = (),
        claim: scoring_work.Claim | None = None, now: datetime | None = None,
    ) -> None:
        """Store the verdicts of one scoring run over reports up to ``through_report_id``, and their
        ``fleet_index`` rows (:mod:`farmwatch.collector.fleet_index`) in the same transaction, which
        also releases ``claim`` (its devices are done unless marked again since; ``now``: when)."""

        def save() -> None:
            with self._writer.begin() as tx:
                for start in range(0, len(fleet), 500):  # bounded IN lists (SQLite caps bound variables)
                    chunk = list(fleet[start:start + 500])
                    tx.execute(fleet_index.delete().where(fleet_index.c.device_id.in_([r["device_id"] for r in chunk])))
                    tx.execute(fleet_index.insert(), chunk)
                if scored:  # one statement for the batch (per verdict, building it was 3 % of a scoring run)
                    upsert = scoring_work.dialect_insert(tx, verdicts)
                    tx.execute(upsert.on_conflict_do_update(
                        index_elements=[verdicts.c.device_id],
                        set_={name: upsert.excluded[name] for name in ("scored_at", "through_report_id", "verdict")}),
                        [{"device_id": verdict.device_id, "scored_at": verdict.scored_at,
                          "through_report_id": through_report_id, "verdict": json.dumps(to_wire(verdict))}
                         for verdict in scored])
                if self.verdict_listener is not None:
                    self.verdict_listener.record(tx, scored, through_report_id)
                if claim is not None:
                    scoring_work.release(tx, claim, now or datetime.now(timezone.utc), done=True)

        # Two replicas scoring one device at once may both insert its fleet_index row; the retry replaces it.
        _once_more_on_conflict(save)

    def suppressed_detectors(self, now: datetime) -> dict[str, set[str]]:
        """Per device, the detectors analysts marked false positive in suppressions still in force."""
        query = sa.select(suppressions.c.device_id, suppressions.c.detector).where(
            suppressions.c.expires_at > now, suppressions.c.lifted_at.is_(None))
        found: dict[str, set[str]] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                found.setdefault(row.device_id, set()).add(row.detector)
        return found

    def mark_stale(self, device_id: str) -> None:
        """Keep a device's verdict readable but stale, so the next refresh re-scores it."""
        with self._writer.begin() as tx:
            tx.execute(verdicts.update().where(verdicts.c.device_id == device_id).values(through_report_id=0))
            scoring_work.mark(tx, [device_id], datetime.now(timezone.utc))

    # --- scoring shared by replicas (farmwatch/collector/scoring_work.py) -------------------

    def claim_scoring(self, holder: str, now: datetime, hold_seconds: float, limit: int,
                      dirtied_by: datetime | None = None, among: Collection[str] | None = None) -> scoring_work.Claim:
        """Claim up to ``limit`` devices that need scoring (:func:`scoring_work.claim`), one transaction."""
        with self._writer.begin() as tx:
            return scoring_work.claim(tx, holder, now, hold_seconds, limit, dirtied_by, among)

    def release_claim(self, claim: scoring_work.Claim, now: datetime) -> None:
        """Give up a claim without verdicts (a failed run): its devices stay marked for any replica."""
        with self._writer.begin() as tx:
            scoring_work.release(tx, claim, now, done=False)

    def mark_changed(self, changed_since: scoring_work.ChangedSince, now: datetime) -> int:
        """Mark the devices whose rollups changed since any replica last did (:func:`scoring_work.mark_changed`);
        the change set is read before the write lock is taken, and again under it only if another
        replica marked in between."""
        with self.engine.connect() as connection:
            since = scoring_work.marked_batch(connection) or 0  # none yet: the first mark starts at batch 0
        read_ahead = (since, changed_since(since))
        with self._writer.begin() as tx:
            return scoring_work.mark_changed(tx, changed_since, now, read_ahead)

    def mark_aged_out(self, aged_out: scoring_work.AgedOut, lookback_start: datetime, now: datetime) -> int:
        """Mark the devices whose windows left the lookback since any replica last did (:func:`scoring_work.mark_aged_out`)."""
        with self._writer.begin() as tx:
            return scoring_work.mark_aged_out(tx, aged_out, lookback_start, now)

    def mark_stale_for_scoring(self, seen_since: datetime, now: datetime) -> int:
        """Mark every stale device seen since ``seen_since`` not marked yet (:func:`scoring_work.mark_stale`)."""
        with self._writer.begin() as tx:
            return scoring_work.mark_stale(tx, seen_since, now)

    def scoring_backlog(self) -> int:
        """Devices marked for scoring and not yet scored, on every replica."""
        with self.engine.connect() as connection:
            return scoring_work.backlog(connection)

    def verdict(self, device_id: str) -> Verdict | None:
        with self.engine.connect() as connection:
            text = connection.execute(
                sa.select(verdicts.c.verdict).where(verdicts.c.device_id == device_id)
            ).scalar_one_or_none()
        return None if text is None else Verdict.model_validate_json(text)

    def device_exists(self, device_id: str) -> bool:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(devices.c.device_id).where(devices.c.device_id == device_id)
            ).first() is not None

    def device_summaries(self) -> list[dict[str, Any]]:
        """One row per enrolled device for ``GET /api/v1/devices``, sorted by device id."""
        query = (
            sa.select(devices.c.device_id, devices.c.hostname, devices.c.last_seen, verdicts.c.verdict, roster.c.entry)
            .select_from(
                devices.outerjoin(verdicts, verdicts.c.device_id == devices.c.device_id).outerjoin(
                    roster, roster.c.device_id == devices.c.device_id
                )
            )
            .order_by(devices.c.device_id)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        summaries = []
        for row in rows:
            verdict = json.loads(row.verdict) if row.verdict else {}
            entry = json.loads(row.entry) if row.entry else {}
            summaries.append(
                {
                    "device_id": row.device_id,
                    "employee_id": entry.get("employee_id"),
                    "hostname": row.hostname,
                    "last_seen": row.last_seen,
                    "risk": verdict.get("risk"),
                    "verdict": verdict.get("verdict"),
                    "scored_at": verdict.get("scored_at"),
                }
            )
        return summaries

    def device_count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(devices)).scalar_one()


# The statements of a report batch, built once: each batch only binds values (no expression building).
# A batch's statements go straight to the driver (driver_sql.py: Core's per-statement work was most
# of the committer's CPU). Locking the device rows first (FOR UPDATE, PostgreSQL; SQLite's BEGIN
# IMMEDIATE already holds the one write lock) serializes concurrent batches of one device; replicas
# lock devices in one order, so batches cannot deadlock.
_LOCK_DEVICES = f"SELECT device_id, last_seq FROM {devices.name} WHERE device_id IN :devices ORDER BY device_id"
_LIVE_TOKENS = f"SELECT token_sha256, device_id FROM {tokens.name} WHERE token_sha256 IN :tokens AND revoked_at IS NULL"
# The per-report rows go straight to the driver (driver_sql.py); the device's newest report id is
# read back by its unique (device_id, seq), so the INSERT needs no RETURNING.
# Each is one statement for the whole batch (driver_sql.execute_values). UPDATE ... FROM needs SQLite
# 3.33 (https://sqlite.org/lang_update.html#update_from; checked by open_engine); VALUES columns are
# column1, column2 ... on SQLite and PostgreSQL alike.
_INSERT_REPORTS = f"INSERT INTO {reports.name} (device_id, seq, digest, received_at, record) VALUES :rows"
_UPDATE_DEVICES = (f"UPDATE {devices.name} SET last_seen = newest.column2, last_seq = newest.column4, last_report_id = "
                   f"(SELECT id FROM {reports.name} WHERE {reports.name}.device_id = newest.column1 "
                   f"AND {reports.name}.seq = newest.column3) "
                   f"FROM (VALUES :rows) AS newest WHERE {devices.name}.device_id = newest.column1")


@functools.cache
def _stored_query(pairs: int) -> str:
    """The digests stored under ``pairs`` (device, seq) pairs: ``(device_id = :d0 AND seq = :s0) OR ...``.

    An OR of pairs is one unique-index lookup each on SQLite (MULTI-INDEX OR) and PostgreSQL (BitmapOr);
    a row-value IN list makes SQLite scan the whole table. One text per batch size, built once."""
    alternatives = " OR ".join(f"(device_id = :d{n} AND seq = :s{n})" for n in range(pairs))
    return f"SELECT device_id, seq, digest FROM {reports.name} WHERE {alternatives}"


def _stored_digests(tx: Connection, pairs: list[tuple[str, int]]) -> dict[tuple[str, int], str]:
    bound: dict[str, Any] = {}
    for n, (device_id, seq) in enumerate(pairs):
        bound[f"d{n}"], bound[f"s{n}"] = device_id, seq
    return {(device_id, seq): digest for device_id, seq, digest in driver_sql.fetch(tx, _stored_query(len(pairs)), bound)}


def store_report_batch(tx: Connection, batch: list[ArrivingReport]) -> list[StoredReport]:
    """Store a batch of reports in ``tx`` in a few statements; one outcome per report, in order.

    Reports are taken in arrival order, so a resend queued behind its original in the same batch is
    a duplicate, as it would be one batch later. A device that does not exist raises: :class:`GroupCommit`
    then writes each report alone to find whose it was."""
    device_ids = sorted({item.record["report"]["device_id"] for item in batch})
    lock = "" if tx.dialect.name == "sqlite" else " FOR UPDATE"
    last_seq = {device_id: seq or 0 for device_id, seq in driver_sql.fetch(tx, _LOCK_DEVICES + lock, {"devices": device_ids})}
    asked = sorted({item.token_sha256 for item in batch if item.token_sha256 is not None})
    live = dict(driver_sql.fetch(tx, _LIVE_TOKENS, {"tokens": asked})) if asked else {}
    taken = _stored_digests(tx, sorted({(i.record["report"]["device_id"], i.record["report"]["seq"]) for i in batch}))
    # The first receipt time decides the quota's hour and day for the whole batch (it spans milliseconds).
    quota = quotas.usage(tx, device_ids, batch[0].received_at) if any(i.limits for i in batch) else None
    outcomes: list[StoredReport | None] = []
    accepted: list[ArrivingReport] = []
    for item in batch:
        device_id, seq = item.record["report"]["device_id"], item.record["report"]["seq"]
        if device_id not in last_seq:
            raise LookupError(f"no enrolled device {device_id!r}")
        if item.token_sha256 is not None and live.get(item.token_sha256) != device_id:
            outcomes.append(StoredReport(new=False, conflict=False, revoked=True))
            continue
        if (device_id, seq) in taken:
            conflict = taken[(device_id, seq)] != item.digest
            if conflict:  # the agent's sequence restarted: evidence, kept as a count (agent_history)
                agent_history.note_seq_conflict(tx, device_id, seq, item.received_at)
            outcomes.append(StoredReport(new=False, conflict=conflict))
            continue
        if quota is not None and item.limits is not None:
            wait = quotas.wait_for(quota.of(device_id), item.received_at, item.size, item.limits)
            if wait is not None:
                outcomes.append(StoredReport(new=False, conflict=False, retry_after=wait))
                continue
            quotas.charge(quota, device_id, item.size)
        taken[(device_id, seq)] = item.digest
        last_seq[device_id] = max(last_seq[device_id], seq)
        accepted.append(item)
        outcomes.append(None)
    if accepted:
        stamps = agent_history.stamps(tx, {item.record["report"]["device_id"] for item in accepted})
        rows = [(item.record["report"]["device_id"], item.record["report"]["seq"], item.digest,
                 driver_sql.stored_time(tx, item.received_at),
                 orjson.dumps({**item.record, **stamps[item.record["report"]["device_id"]]}).decode())
                for item in accepted]
        driver_sql.execute_values(tx, _INSERT_REPORTS, rows)
        newest = {device_id: (seq, seen) for device_id, seq, _, seen, _ in rows}  # each device's last report of the batch
        driver_sql.execute_values(tx, _UPDATE_DEVICES, [
            (device_id, seen, seq, last_seq[device_id]) for device_id, (seq, seen) in newest.items()])
    if quota is not None:
        quotas.save(tx, quota)
    stored = iter(accepted)
    return [outcome or _stored(next(stored), quota) for outcome in outcomes]


def _stored(item: ArrivingReport, quota: quotas.Usage | None) -> StoredReport:
    """The outcome of a report this batch stored, with its device's quota as the batch leaves it."""
    spent = None
    if quota is not None and item.limits is not None:  # for the quick check before the next body is read
        spent = quotas.wait_for(quota.of(item.record["report"]["device_id"]), item.received_at, 0, item.limits)
    return StoredReport(new=True, conflict=False, next_wait=spent)


def _once_more_on_conflict(step: Callable[[], Done]) -> Done:
    """Run a transaction; when a unique key raced with another writer, run it once more."""
    try:
        return step()
    except sa.exc.IntegrityError:
        return step()


def _reason(failure: sa.exc.SQLAlchemyError) -> str:
    original = getattr(failure, "orig", None)
    return str(original or failure).splitlines()[0]
