"""Incremental features: stored reports reduced once, outside the request path, into per-device rollups.

The reducer (:func:`reduce_pending`, run by :class:`Reducer` in the background and by the scorer
before it reads) parses each stored report once with the detectors' own reduction
(:func:`farmwatch.detectors.frame.reduce_json`: only the fields detectors read) and files it in

* ``rollups``: one row per device and hour of receipt, holding that hour's reduced windows (about a
  tenth of a raw report each, already parsed), so scoring reads no raw JSON (windows appended
  batch by batch while the hour is the device's latest, packed once a later hour comes: :data:`LAYOUT`);
* ``sightings``: one row per network identity (egress address, gateway MAC hash, Wi-Fi BSSID hash)
  x hour x device, so the devices that may share a network with a device are found in SQL.

Exactly once, with any number of replicas on one database: a reduction batch is written in one
transaction that holds the ``rollup_progress`` row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: one
replica reduces at a time, the others skip; on SQLite ``BEGIN IMMEDIATE`` serializes writers). The
batch writes its rollups, its sightings and a ``reduced_reports`` marker per report in that
transaction, so a crash loses the whole batch and the next one redoes it, and a report with a
marker is never reduced again. Batches are numbered under the same lock, so a batch number is a mark
that orders what scoring has seen (:func:`changed_devices`). On SQLite the batch is reduced before
that transaction, from a read-only snapshot, and written only if what the snapshot read still holds
under the lock (:func:`reduce_pending`); a scoring run's reducer claims its devices first
(``reduction_claims``), so reducers running at once reduce different devices' reports, each once.

PostgreSQL assigns report ids before commit, so a report can become visible after one with a
higher id. The reducer therefore looks for reports without a marker above a floor, and moves the
floor only up to reports received ``SETTLE_SECONDS`` ago (an ingest transaction lasts well under a
second), never past one still unreduced; markers below the floor are deleted. Between floor
moves the background reducer looks only above the highest reduced report (the highest marker, by
whichever replica), since the floor lags ``SETTLE_SECONDS`` behind and walking every reduced report
above it cost each batch more than the batch itself on PostgreSQL; a report that became visible
below it is found at the next floor move (every ``FLOOR_CHECK_SECONDS``), or by scoring's catch-up
(:func:`catch_up`), which always looks from the floor.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from farmwatch.collector.periodic import PeriodicWorker
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import (
    reduced_reports, reduction_claims, refused_reports, reports, rollup_layouts, rollup_progress, rollups,
    sightings,
)
from farmwatch.detectors.frame import (
    WINDOW_LAYOUT, RecordError, packed_columns, reduce_json, unpacked_columns, window_columns, windows_of_columns,
)
from farmwatch.detectors.sightings import window_sightings

log = logging.getLogger("farmwatch.collector.rollups")

BATCH = 500
"""Reports per reduction batch (on SQLite ingest waits for its write transaction only: tens of ms)."""
CLAIM_SECONDS = 60.0
"""How long a reducer's claim on SQLite holds its batch's devices (:func:`_claim`): far longer than
a batch of ``BATCH`` takes to reduce; a reducer that dies leaves its claim to lapse after this."""
TAKE_HELD_AFTER_SECONDS = 10.0
"""How long a reducer that must finish (``reduce_pending(wait=True)``, a scoring run's catch-up)
waits for other reducers' claimed batches before reducing those reports itself."""
CLAIM_POLL_SECONDS = 0.05
"""How often such a reducer looks whether the claimed batches were written."""
SETTLE_SECONDS = 600.0
"""How long after receipt a report is surely committed (module docstring: the floor)."""
FLOOR_CHECK_SECONDS = 30.0
"""How often the background reducer moves the floor and looks for pending reports above it, not
only above the highest reduced report (:class:`Reducer`): finding how far the floor may go scans every report above
it (:func:`_settled`), and the floor stays put for ``SETTLE_SECONDS`` anyway, so a reducer keeping
up with ingest in small batches paid that scan per batch for nothing (22 % of its samples in
``bench/collector_ingest.py``, issue 13). So did the batch's own query, which walked every reduced
report above the floor to find the few without a marker."""
CHUNK = 400  # keys per IN list (SQLite caps bound variables)
PROGRESS = "reducer"
PACKED = "packed"
"""``rollups.layout`` of a row written now: one :func:`farmwatch.detectors.frame.packed_columns` object
per device-hour (the :data:`COLUMNS` form with number columns as base64 arrays and text columns
dictionary-coded, so decoding makes a few Python objects per column, not one per value), with
``received`` (microseconds since the epoch) and ``report_id`` lists beside it, in order of receipt."""
COLUMNS = "columns"
"""``rollups.layout`` of a row the previous release wrote: the same object as :data:`PACKED`'s, each
column a JSON list (:func:`farmwatch.detectors.frame.window_columns`). Scoring extends each column
across a batch and converts it once, with no Python work per window (issue 12). Read as it is (packed
first, so a batch is all of one form), and rewritten as :data:`PACKED` when a batch merges into it. A
column a row lacks (written under an older layout) reads as None."""
LAYOUT = hashlib.sha256(orjson.dumps(WINDOW_LAYOUT)).hexdigest()[:16]
"""Any other ``rollups.layout`` is a ``rollup_layouts`` digest naming the columns of the row-shaped
windows earlier versions stored (a JSON list of ``StoredWindow``); this one is the current
:data:`WINDOW_LAYOUT`'s. Such rows are read through :func:`relayout` (columns mapped by name).

A device-hour still being filled is stored so, under this layout: each batch that files reports
into the device's latest hour appends their windows to the row's text (about 0.7 KB and 1 us of
JSON a window; nothing decoded). Packing costs about as much for one window as for twelve (a cost
per column: ~190 us), so re-packing the hour in every batch that added a report to it cost each
report a pack and an unpack of the hour so far (issue 13). The first batch that files a later hour
of the device packs the row (:data:`PACKED`; :func:`_read_rollups` finds it within
``PACK_REACH_HOURS``), so scoring reads one packed block per finished hour; until then scoring
packs it as it reads (:func:`windows`). A row of an older layout gets the same: packed when a batch
merges into an earlier hour, rewritten under this layout when into the latest."""
PACK_REACH_HOURS = 24
"""How far back a batch looks for a device's :data:`LAYOUT` rows to pack: a device back after a
longer silence leaves its last row unpacked (read the same, only slower: :func:`windows` packs it)."""

StoredWindow = list[Any]
"""``[received_at_us, report_id, *Window]`` (microseconds since the epoch of receipt)."""


WINDOW_END = WINDOW_LAYOUT["reports"].index("window_end")


def _parse_time(text: str) -> datetime:
    """An RFC 3339 time (validated at ingest) as a tz-aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def hour_of(moment: datetime) -> int:
    """Whole hours since the epoch (UTC)."""
    return int(moment.timestamp() // 3600)


def _micros(moment: datetime) -> int:
    return int(moment.astimezone(timezone.utc).timestamp() * 1_000_000)


def _insert(connection: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(table)


@dataclass(frozen=True)
class Reduced:
    """What one reduction batch did."""

    batch: int  # its number (0: nothing to do, or another replica was reducing)
    reports: int  # reports reduced
    skipped: int  # reports the reduction refused (logged, kept in refused_reports; marked so they are not retried)


def reduce_pending(storage: Storage, now: datetime, limit: int = BATCH, wait: bool = False,
                   since: datetime | None = None, from_floor: bool = True) -> Reduced:
    """Reduce up to ``limit`` stored reports that have not been reduced, and file them in one transaction.

    Returns at once with batch 0 when another replica holds the reducer (``wait`` False) or when
    nothing is pending; with ``wait`` True it waits for that replica's batch to commit instead.
    ``since`` (the start of the scoring lookback) matters once, when the reducer first runs on a
    database: reports received before it are never reduced, since scoring never reads them (a
    database upgraded with weeks of reports starts scoring without reducing all of them first).
    ``from_floor`` False: look only above the highest reduced report (:func:`_highest_reduced`), not
    at every report above the floor, and leave the floor where it is (skipping :func:`_settled`'s
    scan); a report below it still pending (one that became visible late, module docstring) waits
    for a call from the floor.

    On SQLite a reducer that must finish (``wait`` True) claims the batch's devices first
    (:func:`_claim`: ``reduction_claims`` rows, written in a short write transaction); the
    background reducer (``wait`` False) takes the devices of the first pending reports nobody holds
    and claims none (one query finds its batch: no claim scan, no claim transaction), so a scoring
    run never waits behind the niced reducer process, and each batch takes the write lock once.
    The batch's pending reports are then read, parsed, reduced and merged into their rollups in a
    read-only snapshot (WAL: it blocks no writer), outside the one write lock that every report's commit waits for (issue 13: reduced under that lock, it set
    ingest's p99). The write transaction that follows only checks that what the snapshot read still
    holds (:func:`_still_holds`) and writes, deleting the claim; when it does not (a purge or
    retention got there first), nothing is written and the claimed devices' reports are read again.
    Reducers that claim take other devices meanwhile, so two scoring processes catching up at once reduce
    different batches side by side, and their batches write different rollup rows, instead of each
    preparing every batch and one throwing its work away. With nothing left but reports of devices
    others hold, ``wait`` True waits for their batches to be written (a claim is deleted with its
    batch), and after ``TAKE_HELD_AFTER_SECONDS`` reduces those reports too, unclaimed (their holder
    may be another scoring process, descheduled on busy cores, or dead): whichever writes first
    files them, the other's check fails. On PostgreSQL the progress row is held first and the batch reduced under
    it: ingest never waits for that row lock, and a second replica skips at once (``wait`` False)
    or waits for the batch (``wait`` True) instead of reducing the same reports."""
    if storage.engine.dialect.name != "sqlite":
        with storage._writer.begin() as tx:
            progress = _hold_progress(tx, wait, since)
            if progress is None:
                return Reduced(0, 0, 0)
            return _commit(tx, *_prepare(tx, progress[0], limit, now, from_floor=from_floor), progress)
    holder = uuid.uuid4().hex
    waiting_since: float | None = None  # when this call found only reports others hold
    try:
        while True:
            take_held = waiting_since is not None and time.monotonic() - waiting_since >= TAKE_HELD_AFTER_SECONDS
            devices: list[str] | None = None  # the background reducer's batch: devices nobody holds
            if wait:
                devices, held = _claim(storage, holder, now, limit, since, take_held)
                if not devices and held:
                    waiting_since = time.monotonic() if waiting_since is None else waiting_since
                    time.sleep(CLAIM_POLL_SECONDS)
                    continue
            with storage.engine.connect() as reader, reader.begin():  # BEGIN (deferred): a snapshot, no lock
                floor = _read_floor(reader, since)
                if devices == []:  # a claiming reducer found nothing pending
                    filing, settled = _reduce(reader, []), _settled(reader, floor, now) if from_floor else None
                else:
                    filing, settled = _prepare(reader, floor, limit, now, devices, unheld_at=None if devices else now,
                                               from_floor=from_floor)
            with storage._writer.begin() as tx:
                progress = _hold_progress(tx, wait, since)
                if progress is None:  # not on SQLite (BEGIN IMMEDIATE serializes writers); kept for the type
                    return Reduced(0, 0, 0)
                if _still_holds(tx, filing, progress[0]):  # its claim goes, and any that lapsed
                    tx.execute(reduction_claims.delete().where(
                        sa.or_(reduction_claims.c.holder == holder, reduction_claims.c.claimed_until < now)))
                    return _commit(tx, filing, settled, progress)
    except BaseException:
        _unclaim(storage, holder)
        raise


def _claim(storage: Storage, holder: str, now: datetime, limit: int, since: datetime | None,
           take_held: bool) -> tuple[list[str], bool]:
    """The devices whose pending reports the next batch reduces, on SQLite, and whether every
    pending report is of a device another reducer holds. The devices: those ``holder`` holds (its
    batch is being read again), else those of the first ``limit`` pending reports of devices
    nobody holds, claimed for ``holder`` until ``CLAIM_SECONDS`` after ``now``; none when nothing
    is pending or others hold every pending report, unless ``take_held``: then the devices of the
    first ``limit`` of those, not claimed (:func:`reduce_pending`).

    The pending reports are looked for in a snapshot, not under the write lock (a scan of every
    report above the floor); the write transaction claims those of the devices nobody claimed
    meanwhile, and when that is none of them (two reducers read the same pending reports at once),
    they are looked for again."""
    held = _held(now)
    mine = sa.select(reduction_claims.c.device_id).where(reduction_claims.c.holder == holder)
    while True:
        with storage.engine.connect() as reader, reader.begin():
            claimed = list(reader.execute(mine).scalars())
            if claimed:
                return claimed, False
            pending = _pending(_read_floor(reader, since))
            free = _devices_of(reader.execute(sa.select(reports.c.device_id).where(pending, ~held)
                                              .order_by(reports.c.id).limit(limit)).scalars())
            if not free:
                others = _devices_of(reader.execute(
                    sa.select(reports.c.device_id).where(pending).order_by(reports.c.id).limit(limit)).scalars())
                return (others if take_held else []), bool(others)
        until = now + timedelta(seconds=CLAIM_SECONDS)
        with storage._writer.begin() as tx:
            tx.execute(reduction_claims.delete().where(reduction_claims.c.claimed_until < now))
            tx.execute(sqlite.insert(reduction_claims).on_conflict_do_nothing(index_elements=[reduction_claims.c.device_id]),
                       [{"device_id": device, "holder": holder, "claimed_until": until} for device in free])
            claimed = list(tx.execute(mine).scalars())
        if claimed:
            return claimed, False
        # Another reducer claimed every one of them meanwhile (both read the same pending reports): look again.


def _held(now: datetime) -> sa.Exists:
    """A report's device is claimed by a reducer whose claim has not lapsed at ``now``."""
    return sa.exists().where(reduction_claims.c.device_id == reports.c.device_id, reduction_claims.c.claimed_until >= now)


def _devices_of(device_ids: Iterator[str]) -> list[str]:
    """Each device once, in order of its first report."""
    return list(dict.fromkeys(device_ids))


def _unclaim(storage: Storage, holder: str) -> None:
    """Give up ``holder``'s claim after a failure, if the database lets us (else it lapses)."""
    try:
        with storage._writer.begin() as tx:
            tx.execute(reduction_claims.delete().where(reduction_claims.c.holder == holder))
    except sa.exc.SQLAlchemyError:
        log.warning("could not give up a reduction claim; it lapses in %.0f s", CLAIM_SECONDS)


def _pending(floor: int) -> sa.ColumnElement[bool]:
    """Reports above ``floor`` without a reduced marker: not reduced yet."""
    return sa.and_(reports.c.id > floor, ~sa.exists().where(reduced_reports.c.report_id == reports.c.id))


def _prepare(connection: Connection, floor: int, limit: int, now: datetime, devices: Collection[str] | None = None,
             unheld_at: datetime | None = None, from_floor: bool = True) -> tuple[Filing, int | None]:
    """The next batch: up to ``limit`` reports above ``floor`` (unless ``from_floor`` is False: above
    the highest reduced report) without a reduced marker (of ``devices`` only, when given; of devices
    no reducer holds at ``unheld_at``, when given), reduced and merged into their rollups as
    ``connection`` reads them (nothing is written); and the highest report id the floor may move up
    to (:func:`_settled`; None, not looked for, unless ``from_floor``)."""
    above = floor if from_floor else max(floor, _highest_reduced(connection))
    pending = connection.execute(_batch_query(above, limit, devices, unheld_at)).all()
    return _reduce(connection, pending), _settled(connection, floor, now) if from_floor else None


def _highest_reduced(connection: Connection) -> int:
    """The highest report id with a reduced marker (0: none): one step down the markers' primary key."""
    return int(connection.execute(sa.select(sa.func.coalesce(sa.func.max(reduced_reports.c.report_id), 0))).scalar_one())


def _batch_query(floor: int, limit: int, devices: Collection[str] | None = None,
                 unheld_at: datetime | None = None) -> sa.Select[Any]:
    """The query of :func:`_prepare`'s batch: the first ``limit`` reports above ``floor`` without a
    reduced marker, of ``devices`` only when given, of devices nobody holds at ``unheld_at`` when given.

    The devices are matched as ``device_id || ''``, an expression no index covers, so the database
    finds the batch by the primary key above the floor (the last minutes' reports) and filters it by
    device. Matched as the bare column, SQLite walks each listed device's whole stored history
    through the (device_id, seq) index instead, checking a reduced marker per report: 30 days of
    reports by default, thousands per device, for each device of every batch."""
    query = sa.select(reports.c.id, reports.c.device_id, reports.c.received_at, reports.c.record).where(_pending(floor))
    if devices is not None:  # one bound JSON array, whatever the count (SQLite caps bound variables)
        listed = sa.func.json_each(orjson.dumps(sorted(devices)).decode()).table_valued("value")
        query = query.where(reports.c.device_id.concat("").in_(sa.select(listed.c.value)))
    if unheld_at is not None:
        query = query.where(~_held(unheld_at))
    return query.order_by(reports.c.id).limit(limit)


def _commit(tx: Connection, filing: Filing, settled: int | None, progress: tuple[int, int]) -> Reduced:
    """Write ``filing`` as the next batch under the held reducer ``progress`` (floor, last batch),
    and move the floor up to ``settled`` at most."""
    floor, last_batch = progress
    batch = last_batch + 1 if filing.report_ids else last_batch
    skipped = _write(tx, filing, batch) if filing.report_ids else 0
    new_floor = _advance_floor(tx, floor, settled)
    tx.execute(rollup_progress.update().where(rollup_progress.c.name == PROGRESS)
               .values(batch=batch, floor_report_id=new_floor))
    return Reduced(batch if filing.report_ids else 0, len(filing.report_ids), skipped)


def _read_floor(connection: Connection, since: datetime | None) -> int:
    """The reducer's floor as ``connection`` reads it (before its first batch: the one
    :func:`_hold_progress` will give it)."""
    floor = connection.execute(sa.select(rollup_progress.c.floor_report_id)
                               .where(rollup_progress.c.name == PROGRESS)).scalar()
    if floor is not None:
        return int(floor)
    return 0 if since is None else _floor_before(connection, since)


def _still_holds(tx: Connection, filing: Filing, floor: int) -> bool:
    """Whether ``filing``, read before ``tx`` took the lock, may be written as it is: each of its
    reports still stored, above the held ``floor`` (markers below it are deleted) and without a
    marker, and each rollup row it merged into still the one it read (a row's ``batch`` changes
    with every write to it, since batch numbers only grow; a deleted row is missing).

    SQLite only (the one caller): each side is one statement over a JSON array of the batch
    (``json_each``), so the check costs the lookups, not a statement per few hundred keys."""
    ids = sa.func.json_each(orjson.dumps(filing.report_ids).decode()).table_valued("value")
    unreduced = tx.execute(sa.select(sa.func.count()).select_from(ids).join(reports, reports.c.id == ids.c.value).where(
        reports.c.id > floor, ~sa.exists().where(reduced_reports.c.report_id == reports.c.id))).scalar_one()
    if unreduced != len(filing.report_ids):
        return False
    read = sa.func.json_each(orjson.dumps([[*key, batch] for key, batch in filing.read.items()]).decode()
                             ).table_valued("value")
    changed = tx.execute(sa.select(sa.func.count()).select_from(read).outerjoin(rollups, sa.and_(
        rollups.c.device_id == sa.func.json_extract(read.c.value, "$[0]"),
        rollups.c.hour == sa.func.json_extract(read.c.value, "$[1]"))).where(
        rollups.c.batch.is_distinct_from(sa.func.json_extract(read.c.value, "$[2]")))).scalar_one()
    return changed == 0


def refile_device(tx: Connection, device_id: str, report_ids: Collection[int]) -> None:
    """Rebuild ``device_id``'s rollups and sightings from the reports it has left, inside the
    caller's transaction (``devices purge``): what was derived from purged reports must go with them.
    ``report_ids``: every id the device had before the purge, whose reduced markers are dropped (a
    freed id may be given to a new report, which must not pass for reduced). Waits for a replica's
    batch in flight; does nothing before the first reduction."""
    progress = tx.execute(sa.select(rollup_progress.c.batch).where(rollup_progress.c.name == PROGRESS)
                          .with_for_update()).first()
    tx.execute(rollups.delete().where(rollups.c.device_id == device_id))
    tx.execute(sightings.delete().where(sightings.c.device_id == device_id))
    tx.execute(refused_reports.delete().where(refused_reports.c.device_id == device_id))
    ids = list(report_ids)
    for start in range(0, len(ids), BATCH):  # bounded IN lists
        tx.execute(reduced_reports.delete().where(reduced_reports.c.report_id.in_(ids[start:start + BATCH])))
    if progress is None:
        return
    left = tx.execute(sa.select(reports.c.id, reports.c.device_id, reports.c.received_at, reports.c.record)
                      .where(reports.c.device_id == device_id).order_by(reports.c.id)).all()
    if left:
        batch = int(progress.batch) + 1
        _file(tx, left, batch)
        tx.execute(rollup_progress.update().where(rollup_progress.c.name == PROGRESS).values(batch=batch))


def catch_up(storage: Storage, now: datetime, since: datetime | None = None) -> int:
    """Reduce every pending report (waiting for another replica's batch rather than skipping it);
    returns how many this call reduced. Scoring calls it so verdicts cover every stored report.
    ``since``: as for :func:`reduce_pending`."""
    total = 0
    while True:
        done = reduce_pending(storage, now, wait=True, since=since)
        total += done.reports
        if done.reports == 0:
            return total


def _hold_progress(tx: Connection, wait: bool, since: datetime | None) -> tuple[int, int] | None:
    """Lock the reducer's progress row (creating it once, its floor below the first report received
    since ``since``); None when another replica holds it."""
    query = sa.select(rollup_progress.c.floor_report_id, rollup_progress.c.batch).where(
        rollup_progress.c.name == PROGRESS).with_for_update(skip_locked=not wait)
    row = tx.execute(query).first()
    if row is None:
        floor = 0 if since is None else _floor_before(tx, since)
        tx.execute(_insert(tx, rollup_progress).values(name=PROGRESS, batch=0, floor_report_id=floor)
                   .on_conflict_do_nothing(index_elements=[rollup_progress.c.name]))
        row = tx.execute(query).first()
    return None if row is None else (int(row.floor_report_id), int(row.batch))


def _floor_before(tx: Connection, since: datetime) -> int:
    """The id just below the first report received at or after ``since`` (every report when none
    is). Ids need not follow receipt times (a bulk load, a restored database), so this is the lowest
    such id, never the highest id received before ``since``: that could skip recent reports."""
    first = tx.execute(sa.select(sa.func.min(reports.c.id)).where(reports.c.received_at >= since)).scalar()
    if first is not None:
        return int(first) - 1
    return int(tx.execute(sa.select(sa.func.coalesce(sa.func.max(reports.c.id), 0))).scalar_one())


@dataclass(frozen=True)
class Filing:
    """A batch of reports reduced and merged into rollups from what a connection read, not yet
    written (:func:`_reduce`, :func:`_write`)."""

    report_ids: list[int]
    rollups: dict[tuple[str, int], dict[str, Any]]  # each device-hour's new row, without its batch
    read: dict[tuple[str, int], int | None]  # the batch of each of those rows as read (None: no row)
    seen: set[tuple[str, str, int, str]]  # sightings: kind, identity, hour, device
    refused: list[dict[str, Any]]  # refused_reports rows, without their batch


def _file(tx: Connection, pending: Sequence[Any], batch: int) -> int:
    """Reduce ``pending`` reports and write them as ``batch``, all in ``tx``; returns how many were refused."""
    return _write(tx, _reduce(tx, pending), batch)


def _reduce(connection: Connection, pending: Sequence[Any]) -> Filing:
    """Reduce ``pending`` reports into rollups and sightings, merged with the rollups ``connection``
    reads; nothing is written.

    A report the reduction refuses (a time outside the contract's bounds, unreadable) is filed in
    ``refused_reports`` under the device that stored it, as that device's own error evidence
    (:func:`refusals`), and never becomes a window: no other device's frames, no fleet baseline and
    not the fleet's last report time can see it."""
    by_hour: dict[tuple[str, int], list[StoredWindow]] = defaultdict(list)
    ends: dict[tuple[str, int], list[datetime]] = defaultdict(list)
    seen: set[tuple[str, str, int, str]] = set()
    refused: list[dict[str, Any]] = []
    for row in pending:
        try:
            window = reduce_json(row.record, f"report {row.id}")
        except RecordError as problem:
            # Ingest refuses such reports, so this one predates the bounds or the database was
            # tampered with: say so, and do not retry it forever.
            log.error("report %s of device %s is refused by the reduction: %s", row.id, row.device_id, problem)
            refused.append({"report_id": row.id, "device_id": row.device_id, "received_at": row.received_at,
                            "reason": str(problem)[:500]})
            continue
        device = window.row[0]
        by_hour[(device, hour_of(row.received_at))].append([_micros(row.received_at), row.id, *window])
        ends[(device, hour_of(row.received_at))].append(_parse_time(window.row[WINDOW_END]))
        seen.update((kind, identity, hour, device) for kind, identity, hour in window_sightings(window))
    existing = _read_rollups(connection, sorted(by_hour))
    merged = _merge_rollups(by_hour, {key: max(times) for key, times in ends.items()}, existing, _layouts(connection))
    return Filing([row.id for row in pending], merged,
                  {key: None if key not in existing else int(existing[key].batch) for key in merged}, seen, refused)


def _write(tx: Connection, filing: Filing, batch: int) -> int:
    """Write ``filing`` as ``batch``: its rollups, sightings, refusals and a reduced marker per
    report; returns how many reports were refused."""
    inserts = [{**row, "batch": batch} for key, row in filing.rollups.items() if filing.read[key] is None]
    updates = [{**{column: value for column, value in row.items() if column not in ("device_id", "hour")},
                "batch": batch, "key_device": key[0], "key_hour": key[1]}
               for key, row in filing.rollups.items() if filing.read[key] is not None]
    if inserts:
        tx.execute(rollups.insert(), inserts)
    if updates:
        tx.execute(rollups.update().where(rollups.c.device_id == sa.bindparam("key_device"),
                                          rollups.c.hour == sa.bindparam("key_hour")), updates)
    _add_sightings(tx, filing.seen, batch)
    if filing.refused:
        tx.execute(refused_reports.insert(), [{**row, "batch": batch} for row in filing.refused])
    if tx.dialect.name == "postgresql":
        tx.execute(_MARK_AS_ARRAY, {"ids": filing.report_ids, "batch": batch})
    else:
        tx.execute(reduced_reports.insert(), [{"report_id": report_id, "batch": batch} for report_id in filing.report_ids])
    return len(filing.refused)


# On PostgreSQL a batch's markers and sightings go in one statement each, its rows bound as arrays:
# executed row by row (executemany) each row cost the server ~7 us against ~3 us this way (20,000
# sightings, this machine's PostgreSQL 15), besides the driver's work per row in the reducer (issue 13).
_MARK_AS_ARRAY = sa.text(f"INSERT INTO {reduced_reports.name} (report_id, batch) "
                         "SELECT unnest(CAST(:ids AS BIGINT[])), :batch")
_SIGHTINGS_AS_ARRAYS = sa.text(
    f"INSERT INTO {sightings.name} (kind, identity, hour, device_id, batch) SELECT kind, identity, hour, device_id, :batch "
    "FROM unnest(CAST(:kinds AS VARCHAR[]), CAST(:identities AS VARCHAR[]), CAST(:hours AS BIGINT[]), "
    "CAST(:devices AS VARCHAR[])) AS seen (kind, identity, hour, device_id) "
    "ON CONFLICT (kind, identity, hour, device_id) DO NOTHING")


def _read_rollups(connection: Connection, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Any]:
    """The stored rollup rows of ``keys`` (device, hour) that exist, and the :data:`LAYOUT` rows of
    those devices in the ``PACK_REACH_HOURS`` before each device's latest hour among ``keys`` (to be
    packed: :func:`_merge_rollups`).

    Asked as devices and an hour range, which both backends answer from the primary key, and the
    rows not asked for dropped here: SQLite does not use the primary key for a row-value
    ``(device_id, hour) IN (VALUES …)`` list (``EXPLAIN QUERY PLAN``: ``SCAN rollups``), which made
    each chunk a read of the whole table (1.5 s at 20,000 laptops, B, issue 12)."""
    existing: dict[tuple[str, int], Any] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = set(keys[start:start + CHUNK])
        hours = [hour for _, hour in chunk]
        latest = _latest_hours(chunk)
        existing.update(((row.device_id, row.hour), row) for row in connection.execute(
            sa.select(rollups.c.device_id, rollups.c.hour, rollups.c.layout, rollups.c.reports, rollups.c.windows,
                      rollups.c.last_window_end, rollups.c.batch)
            .where(rollups.c.device_id.in_(sorted(latest)),
                   rollups.c.hour.between(min(hours) - PACK_REACH_HOURS, max(hours)),
                   sa.or_(rollups.c.hour >= min(hours), rollups.c.layout == LAYOUT)))
            if (row.device_id, row.hour) in chunk
            or (row.layout == LAYOUT and latest[row.device_id] - PACK_REACH_HOURS <= row.hour < latest[row.device_id]))
    return existing


def _latest_hours(keys: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Each device's latest hour among ``keys`` (device, hour)."""
    latest: dict[str, int] = {}
    for device, hour in keys:
        latest[device] = max(hour, latest.get(device, hour))
    return latest


def _merge_rollups(by_hour: dict[tuple[str, int], list[StoredWindow]], last_end: dict[tuple[str, int], datetime],
                   existing: dict[tuple[str, int], Any], layouts: dict[str, dict[str, list[str]]],
                   ) -> dict[tuple[str, int], dict[str, Any]]:
    """Each device-hour's rollup row (without its batch) once ``by_hour``'s windows are added to the
    ``existing`` one: the device's latest hour in the batch as :data:`LAYOUT` (the new windows'
    text appended), every earlier hour :data:`PACKED` (so are ``existing`` :data:`LAYOUT` rows of
    earlier hours that get no windows)."""
    latest = _latest_hours(by_hour)
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for key in sorted(by_hour.keys() | existing.keys()):
        old, new = existing.get(key), sorted(by_hour.get(key, []))
        if old is None:
            row = {"reports": len(new), "last_window_end": last_end[key]}
        else:
            row = {"reports": int(old.reports) + len(new),
                   "last_window_end": max(old.last_window_end, last_end[key]) if new else old.last_window_end}
        if old is not None and (old.layout != LAYOUT or key[1] < latest[key[0]]):
            new = sorted(_stored_windows(orjson.loads(old.windows), old.layout, layouts) + new)
            old = None
        if key[1] < latest[key[0]]:
            row.update(layout=PACKED, windows=_stored_text(new))
        else:
            text = orjson.dumps(new).decode()
            row.update(layout=LAYOUT, windows=text if old is None else f"{old.windows[:-1]},{text[1:]}")
        merged[key] = {"device_id": key[0], "hour": key[1], **row}
    return merged


def _add_sightings(tx: Connection, seen: set[tuple[str, str, int, str]], batch: int) -> None:
    if tx.dialect.name == "postgresql":
        if seen:
            kinds, identities, hours, devices = (list(column) for column in zip(*sorted(seen)))
            tx.execute(_SIGHTINGS_AS_ARRAYS, {"kinds": kinds, "identities": identities, "hours": hours,
                                              "devices": devices, "batch": batch})
        return
    rows = [{"kind": kind, "identity": identity, "hour": hour, "device_id": device, "batch": batch}
            for kind, identity, hour, device in sorted(seen)]
    if rows:  # one statement executed for many rows: compiled once (a multi-row VALUES is compiled per batch)
        tx.execute(sqlite.insert(sightings).on_conflict_do_nothing(
            index_elements=[sightings.c.kind, sightings.c.identity, sightings.c.hour, sightings.c.device_id]), rows)


def _settled(connection: Connection, floor: int, now: datetime) -> int | None:
    """The highest report id above ``floor`` received ``SETTLE_SECONDS`` before ``now`` (so surely
    committed, module docstring), or None. A scan of every report above the floor, so read before
    the write lock: a report's id and receipt time never change, and a report stored since with an
    id up to it (an id SQLite reuses after a purge) has no marker, which :func:`_advance_floor`
    sees under the lock."""
    settled = connection.execute(sa.select(sa.func.max(reports.c.id)).where(
        reports.c.id > floor, reports.c.received_at < now - timedelta(seconds=SETTLE_SECONDS))).scalar()
    return None if settled is None else int(settled)


def _advance_floor(tx: Connection, floor: int, settled: int | None) -> int:
    """The highest report id up to ``settled`` (:func:`_settled`) below which every report is
    reduced; drops the markers under it."""
    if settled is None or settled <= floor:
        return floor
    gap = tx.execute(sa.select(sa.func.min(reports.c.id)).where(
        reports.c.id > floor, reports.c.id <= settled,
        ~sa.exists().where(reduced_reports.c.report_id == reports.c.id))).scalar()
    new_floor = int(settled if gap is None else gap - 1)
    if new_floor > floor:
        tx.execute(reduced_reports.delete().where(reduced_reports.c.report_id <= new_floor))
    return max(new_floor, floor)


# --- layouts -------------------------------------------------------------------------------------

def _stored_text(windows: list[StoredWindow]) -> str:
    """``windows`` (in order of receipt) as a rollup row's ``windows`` text in the :data:`PACKED` layout."""
    columns = packed_columns(window_columns([window[2:] for window in windows]))
    columns["received"] = [window[0] for window in windows]
    columns["report_id"] = [window[1] for window in windows]
    return orjson.dumps(columns).decode()


def _stored_windows(stored: Any, layout: str, layouts: dict[str, dict[str, list[str]]]) -> list[StoredWindow]:
    """A rollup row's windows (its ``windows`` text decoded) in the current layout, whichever wrote
    them, in order of receipt."""
    if layout not in (PACKED, COLUMNS):  # row-shaped: appended to batch by batch (:data:`LAYOUT`)
        return sorted(relayout(stored, layout, layouts))
    return [[received, report_id, *window] for received, report_id, window
            in zip(stored["received"], stored["report_id"], windows_of_columns(unpacked_columns(stored)))]


def _layouts(connection: Connection) -> dict[str, dict[str, list[str]]]:
    return {row.layout: orjson.loads(row.columns) for row in connection.execute(sa.select(rollup_layouts))}


def relayout(windows: list[StoredWindow], layout: str, layouts: dict[str, dict[str, list[str]]]) -> list[StoredWindow]:
    """Stored windows of an older ``layout`` in the current one: columns matched by name, a column
    the older layout lacks is None (not reported), one it had and the current lacks is dropped."""
    if layout == LAYOUT:
        return windows
    old = layouts[layout]
    converted = []
    for received, report_id, *parts in windows:
        window = []
        for (part, columns), value in zip(WINDOW_LAYOUT.items(), parts):
            mapping = [old[part].index(c) if c in old[part] else None for c in columns]
            if part == "reports":
                window.append([None if i is None else value[i] for i in mapping])
            else:
                window.append([[None if i is None else item[i] for i in mapping] for item in value])
        converted.append([received, report_id, *window])
    return converted


# --- reads ---------------------------------------------------------------------------------------

def windows(storage: Storage, devices: Collection[str], since: datetime) -> Iterator[dict[str, Any]]:
    """The reduced windows of ``devices`` received at or after ``since``, in column form
    (:func:`farmwatch.detectors.frame.packed_columns`, for
    :func:`farmwatch.detectors.frame.frames_from_columns`), one per device-hour: device by device,
    each device's in order of receipt (as :meth:`Storage.records` streams them). A row stored packed
    is passed on as decoded unless the lookback starts inside its hour; any other (an hour still
    being filled, :data:`LAYOUT`, an earlier version's, or one the lookback cuts) is converted, its
    windows in order of receipt, so every block is packed as the reducer packs the hour (the blocks
    are those it would hold once packed) and the frames are assembled from packed pieces only."""
    since_us, first_hour = _micros(since), hour_of(since)
    wanted = sorted(devices)
    with storage.engine.connect() as connection:
        layouts = _layouts(connection)
        for start in range(0, len(wanted), CHUNK):
            query = (sa.select(rollups.c.hour, rollups.c.layout, rollups.c.windows)
                     .where(rollups.c.device_id.in_(wanted[start:start + CHUNK]), rollups.c.hour >= first_hour)
                     .order_by(rollups.c.device_id, rollups.c.hour))
            for row in connection.execution_options(yield_per=2000).execute(query):
                stored = orjson.loads(row.windows)
                if row.layout in (PACKED, COLUMNS) and (row.hour > first_hour or stored["received"][0] >= since_us):
                    yield stored if row.layout == PACKED else packed_columns(stored)
                    continue
                kept = [window[2:] for window in _stored_windows(stored, row.layout, layouts)
                        if row.hour > first_hour or window[0] >= since_us]
                if kept:
                    yield packed_columns(window_columns(kept))


def neighbours(storage: Storage, devices: Collection[str]) -> set[str]:
    """``devices`` and every device linked to them, directly or through others, by a network identity
    seen in the same hour: whom a co-location cluster of these devices can include."""
    found = set(devices)
    frontier = sorted(found)
    # Sightings are by window hour, and a spooled window may end days before it was received, so
    # every retained hour counts (a superset of the links co-location can find since ``since``).
    with storage.engine.connect() as connection:
        while frontier:
            linked: set[str] = set()
            for start in range(0, len(frontier), CHUNK):
                mine = sa.select(sightings.c.kind, sightings.c.identity, sightings.c.hour).where(
                    sightings.c.device_id.in_(frontier[start:start + CHUNK])).subquery()
                query = sa.select(sightings.c.device_id).distinct().join(
                    mine, sa.and_(sightings.c.kind == mine.c.kind, sightings.c.identity == mine.c.identity,
                                  sightings.c.hour == mine.c.hour))
                linked.update(connection.execute(query).scalars())
            frontier = sorted(linked - found)
            found |= linked
    return found


def changed_devices(storage: Storage, since_batch: int) -> tuple[set[str], int]:
    """Devices whose verdict may have changed since reduction batch ``since_batch``, and the batch
    to pass next time.

    A device changed when it has a rollup written or a report refused (:func:`_file`) after that
    batch, or when a network identity it was seen on in some hour gained a new device in that hour
    (a co-location cluster may have grown). Batches commit in number order (module docstring), so nothing is missed between marks.
    """
    with storage.engine.connect() as connection:
        mark = connection.execute(sa.select(rollup_progress.c.batch).where(rollup_progress.c.name == PROGRESS)).scalar()
        if mark is None or mark <= since_batch:
            return set(), since_batch
        window = sa.and_(rollups.c.batch > since_batch, rollups.c.batch <= mark)
        changed = set(connection.execute(sa.select(rollups.c.device_id).where(window).distinct()).scalars())
        changed.update(connection.execute(sa.select(refused_reports.c.device_id).distinct().where(
            refused_reports.c.batch > since_batch, refused_reports.c.batch <= mark)).scalars())
        fresh = sa.select(sightings.c.kind, sightings.c.identity, sightings.c.hour).where(
            sightings.c.batch > since_batch, sightings.c.batch <= mark).distinct().subquery()
        changed.update(connection.execute(sa.select(sightings.c.device_id).distinct().join(
            fresh, sa.and_(sightings.c.kind == fresh.c.kind, sightings.c.identity == fresh.c.identity,
                           sightings.c.hour == fresh.c.hour))).scalars())
    return changed, int(mark)


def aged_out_devices(storage: Storage, after_hour: int, through_hour: int) -> set[str]:
    """Devices with windows received in the hours after ``after_hour`` up to ``through_hour``: once
    those hours leave the scoring lookback, these devices' frames lost windows, so their verdicts
    may change (a device gone quiet decays) although nothing new was reduced for them."""
    with storage.engine.connect() as connection:
        return set(connection.execute(sa.select(rollups.c.device_id).where(
            rollups.c.hour > after_hour, rollups.c.hour <= through_hour).distinct()).scalars())


def refusals(storage: Storage, devices: Collection[str], since: datetime) -> dict[str, list[str]]:
    """Why the reducer refused each of ``devices``' reports received at or after ``since`` (oldest
    report first), for the devices that have any."""
    found: dict[str, list[str]] = defaultdict(list)
    wanted = sorted(devices)
    with storage.engine.connect() as connection:
        for start in range(0, len(wanted), CHUNK):
            for device, reason in connection.execute(
                    sa.select(refused_reports.c.device_id, refused_reports.c.reason)
                    .where(refused_reports.c.device_id.in_(wanted[start:start + CHUNK]),
                           refused_reports.c.received_at >= since)
                    .order_by(refused_reports.c.report_id)):
                found[device].append(reason)
    return dict(found)


def last_window_end(storage: Storage, since: datetime) -> datetime | None:
    """The newest window end of any device's rollups from the hour of ``since`` on: when the fleet
    last reported (agent_health's silence is measured against it)."""
    with storage.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.max(rollups.c.last_window_end)).where(
            rollups.c.hour >= hour_of(since))).scalar()


class FleetLastWindowEnd:
    """:func:`last_window_end` for one ``since``, asked again and again (by every batch of a scoring
    run) without reading the whole fleet's rollups each time: the first call reads them all, later
    calls only the rollups written by reduction batches since the previous call (``rollups.batch``
    is indexed). A rollup's ``last_window_end`` only grows when a batch rewrites it, so the answer
    is the full read's; only a device purged meanwhile (``devices purge``) may still count until
    the next run makes a new one. A whole read costs a scan of the rollups table (no index leads
    with ``hour``): at 20,000 laptops seconds per batch, the same for every batch, so a run's cost
    grew with the square of the fleet."""

    def __init__(self, storage: Storage, since: datetime) -> None:
        self.storage = storage
        self.first_hour = hour_of(since)
        self.newest: datetime | None = None
        self.through_batch: int | None = None  # the reduction batch every rollup read so far was written by or before

    def __call__(self) -> datetime | None:
        with self.storage.engine.connect() as connection:
            # The mark first: a batch commits its rollups with its number, so every rollup of a batch
            # up to the mark is visible to the read below (later ones may be too, and count twice).
            mark = connection.execute(sa.select(rollup_progress.c.batch).where(rollup_progress.c.name == PROGRESS)).scalar()
            query = sa.select(sa.func.max(rollups.c.last_window_end)).where(rollups.c.hour >= self.first_hour)
            if self.through_batch is not None:
                query = query.where(rollups.c.batch > self.through_batch)
            found = connection.execute(query).scalar()
        if found is not None and (self.newest is None or found > self.newest):
            self.newest = found
        self.through_batch = int(mark or 0)
        return self.newest


def devices_since(storage: Storage, since: datetime) -> list[str]:
    """Devices with a rollup from the hour of ``since`` on, sorted (a superset of those with a window
    received since then by at most the devices whose last report came in that first hour)."""
    with storage.engine.connect() as connection:
        return sorted(connection.execute(sa.select(rollups.c.device_id).where(
            rollups.c.hour >= hour_of(since)).distinct()).scalars())


class Reducer(PeriodicWorker):
    """Reduces newly stored reports every ``interval_seconds`` in a daemon thread, as long as there
    are any; a failed batch is logged, counted and retried at the next tick (it committed nothing)."""

    def __init__(self, storage: Storage, clock: Callable[[], datetime], registry: CollectorRegistry,
                 lookback_hours: float, interval_seconds: float = 2.0) -> None:
        super().__init__("farmwatch-reducer", interval_seconds, "reducing stored reports failed; retrying at the next tick",
                         Counter("farmwatch_reduction_failures", "Reduction batches that failed (retried next tick).",
                                 registry=registry))
        self.storage = storage
        self.clock = clock
        self.lookback = timedelta(hours=lookback_hours)
        self.reduced = Counter("farmwatch_reduced_reports", "Stored reports this replica reduced into rollups.",
                               registry=registry)
        self.floor_checked: float | None = None  # time.monotonic() when this reducer last moved the floor
        self.last_success = Gauge("farmwatch_reduction_last_success_timestamp_seconds",
                                  "Unix time this replica last found nothing left to reduce, or another replica reducing (0: not yet).",
                                  registry=registry)

    def step(self) -> None:
        """Reduce batch after batch until none is left (or the reducer stops), moving the floor and
        looking for pending reports below the highest reduced one at most every ``FLOOR_CHECK_SECONDS``."""
        while not self.stopping:
            now = self.clock()
            from_floor = self.floor_checked is None or time.monotonic() - self.floor_checked >= FLOOR_CHECK_SECONDS
            done = reduce_pending(self.storage, now, since=now - self.lookback, from_floor=from_floor)
            if from_floor:
                self.floor_checked = time.monotonic()
            self.reduced.inc(done.reports)
            if not done.reports:
                self.last_success.set(time.time())
                return
