"""The devices that need scoring, shared by every replica on one database (the ``scoring_work`` table).

A device is marked (:func:`mark`: one multi-row UPSERT per call) when its rollups or the sightings
of its networks changed: :func:`mark_changed` takes that change set from
:func:`farmwatch.collector.rollups.changed_devices` since the last reduction batch any replica
marked, under a row lock, so each change is marked once. A roster import, an analyst's action and a
verdict left stale by an older collector mark devices too (:func:`mark_stale`).

A replica :func:`claim` s a batch of marked devices for a while (``SELECT … FOR UPDATE SKIP LOCKED``
on PostgreSQL, so concurrent claimers take disjoint rows without waiting; on SQLite the claim is one
``BEGIN IMMEDIATE`` writer transaction, which serializes claimers the same way), scores them, and
:func:`release` s them in the transaction that stores their verdicts. A row is deleted only when its
``version`` is still the one claimed: a device marked again while it was being scored keeps its
row and is scored again. A replica that dies leaves its claims to lapse at ``claimed_until``; any
replica then takes them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from farmwatch.collector.tables import devices, rollup_progress, scoring_work, verdicts

CHUNK = 500  # device ids per statement (SQLite caps bound variables)
MARKED = "scoring"
"""The ``rollup_progress`` row holding the last reduction batch whose changes were marked here."""
ChangedSince = Callable[[int], tuple[set[str], int]]
"""Devices changed after a reduction batch, and the batch they run to (``rollups.changed_devices``)."""
AGED_OUT = "aged-out"
"""The ``rollup_progress`` row whose ``batch`` holds the last hour of receipt whose devices were
marked for leaving the lookback (an hour number, not a reduction batch)."""
AgedOut = Callable[[int, int], set[str]]
"""Devices with windows received after one hour up to another (``rollups.aged_out_devices``)."""


@dataclass(frozen=True)
class Claim:
    """Devices one replica holds for scoring until ``until``."""

    holder: str
    devices: tuple[str, ...]
    until: datetime


def dialect_insert(connection: Connection, table: sa.Table = scoring_work) -> postgresql.Insert | sqlite.Insert:
    """The dialect's INSERT, which has ON CONFLICT (both backends' syntax is the same here)."""
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(table)


def mark(tx: Connection, device_ids: Collection[str], at: datetime) -> None:
    """Mark devices as needing scoring (in the caller's transaction); a marked device's version moves on."""
    unique = sorted(set(device_ids))
    for start in range(0, len(unique), CHUNK):
        rows = [{"device_id": device, "version": 1, "dirtied_at": at} for device in unique[start:start + CHUNK]]
        insert = dialect_insert(tx)
        tx.execute(insert.values(rows).on_conflict_do_update(
            index_elements=[scoring_work.c.device_id], set_={"version": scoring_work.c.version + 1}))


def marked_batch(connection: Connection) -> int | None:
    """The reduction batch through which changes were last marked (None before the first mark), read
    without a lock: what :func:`mark_changed`'s ``read_ahead`` starts from."""
    return connection.execute(sa.select(rollup_progress.c.batch).where(rollup_progress.c.name == MARKED)).scalar()


def mark_changed(tx: Connection, changed_since: ChangedSince, at: datetime,
                 read_ahead: tuple[int, tuple[set[str], int]] | None = None) -> int:
    """Mark the devices whose rollups or sightings changed since the last call on any replica; returns
    how many. The progress row stays locked until ``tx`` commits, so replicas take turns and each
    reduction batch's changes are marked exactly once.

    ``read_ahead``: ``(batch, changed_since(batch))`` computed before ``tx`` took its lock; used when
    nobody marked since that batch, so the slow read (a join over the sightings: over 10 s at
    20,000 laptops) does not hold SQLite's one write lock, which another scoring process then waited
    for past its busy timeout. When another replica marked in between, the (now small) change since
    its mark is read again under the lock."""
    marked = sa.select(rollup_progress.c.batch).where(rollup_progress.c.name == MARKED).with_for_update()
    since = tx.execute(marked).scalar()
    if since is None:
        tx.execute(dialect_insert(tx, rollup_progress).values(name=MARKED, batch=0, floor_report_id=0)
                   .on_conflict_do_nothing(index_elements=[rollup_progress.c.name]))
        since = tx.execute(marked).scalar_one()
    if read_ahead is not None and read_ahead[0] == since:
        changed, through = read_ahead[1]
    else:
        changed, through = changed_since(int(since))
    mark(tx, changed, at)
    if through != since:
        tx.execute(rollup_progress.update().where(rollup_progress.c.name == MARKED).values(batch=through))
    return len(changed)


def mark_aged_out(tx: Connection, aged_out: AgedOut, lookback_start: datetime, at: datetime) -> int:
    """Mark the devices with windows received in hours that have wholly left the lookback (which
    starts at ``lookback_start``) since the last call on any replica; returns how many. Their frames
    lost windows though nothing new was reduced for them: a device gone quiet is rescored hour by
    hour as its windows age out, so its verdict decays as a full re-read's would (at most an hour
    and one interval later). The first call only records the hour."""
    gone = int(lookback_start.timestamp() // 3600) - 1  # the last hour wholly before the lookback
    held = sa.select(rollup_progress.c.batch).where(rollup_progress.c.name == AGED_OUT).with_for_update()
    last = tx.execute(held).scalar()
    if last is None:
        tx.execute(dialect_insert(tx, rollup_progress).values(name=AGED_OUT, batch=gone, floor_report_id=0)
                   .on_conflict_do_nothing(index_elements=[rollup_progress.c.name]))
        return 0
    if gone <= last:
        return 0
    devices = aged_out(int(last), gone)
    mark(tx, devices, at)
    tx.execute(rollup_progress.update().where(rollup_progress.c.name == AGED_OUT).values(batch=gone))
    return len(devices)


def mark_stale(tx: Connection, seen_since: datetime, at: datetime) -> int:
    """Add every device seen since ``seen_since`` whose verdict is behind its reports (or missing) and
    that is not marked yet; returns how many were added. Picks up what was never marked: a database
    from before this table, a roster import (which makes every verdict stale), an analyst's action."""
    stale = (
        sa.select(devices.c.device_id, sa.literal(1, sa.BigInteger).label("version"),
                  sa.literal(at, scoring_work.c.dirtied_at.type).label("dirtied_at"))
        .select_from(devices.outerjoin(verdicts, verdicts.c.device_id == devices.c.device_id))
        .where(devices.c.last_seen >= seen_since,
               sa.or_(verdicts.c.device_id.is_(None), verdicts.c.through_report_id < devices.c.last_report_id))
    )
    insert = dialect_insert(tx).from_select(["device_id", "version", "dirtied_at"], stale)
    return tx.execute(insert.on_conflict_do_nothing(index_elements=[scoring_work.c.device_id])).rowcount or 0


def claim(tx: Connection, holder: str, now: datetime, hold_seconds: float, limit: int,
          dirtied_by: datetime | None = None, among: Collection[str] | None = None) -> Claim:
    """Claim up to ``limit`` marked devices nobody holds (or whose holder's claim lapsed), oldest mark
    first; with ``dirtied_by``, only devices marked by then (one periodic tick leaves later marks to
    the next tick, so a device is scored at most once per tick across replicas); with ``among``,
    only those devices (a batch's co-location neighbours, scored with it anyway)."""
    free = sa.or_(scoring_work.c.claimed_until.is_(None), scoring_work.c.claimed_until < now)
    query = sa.select(scoring_work.c.device_id).where(free)
    if dirtied_by is not None:
        query = query.where(scoring_work.c.dirtied_at <= dirtied_by)
    query = query.order_by(scoring_work.c.dirtied_at, scoring_work.c.device_id)
    if among is None:
        taken = list(tx.execute(query.limit(limit).with_for_update(skip_locked=True)).scalars())
    else:
        wanted, taken = sorted(among), []
        for start in range(0, len(wanted), CHUNK):
            if len(taken) >= limit:
                break
            chunk = query.where(scoring_work.c.device_id.in_(wanted[start:start + CHUNK])).limit(limit - len(taken))
            taken += tx.execute(chunk.with_for_update(skip_locked=True)).scalars()
    until = now + timedelta(seconds=hold_seconds)
    for start in range(0, len(taken), CHUNK):
        tx.execute(scoring_work.update()
                   .where(scoring_work.c.device_id.in_(taken[start:start + CHUNK]))
                   .values(claimed_by=holder, claimed_until=until, claimed_version=scoring_work.c.version))
    return Claim(holder, tuple(taken), until)


def release(tx: Connection, claim: Claim, now: datetime, done: bool) -> None:
    """Give a claim up. ``done``: its verdicts are stored in ``tx``, so devices not marked again since
    the claim are finished; those marked again wait for the next tick (``dirtied_at`` = ``now``).
    Not ``done`` (the run failed): every device stays marked as it was."""
    mine = (scoring_work.c.claimed_by == claim.holder,)
    for start in range(0, len(claim.devices), CHUNK):
        chunk = scoring_work.c.device_id.in_(claim.devices[start:start + CHUNK])
        unclaimed: dict[str, datetime | None] = {"claimed_by": None, "claimed_until": None, "claimed_version": None}
        if done:
            tx.execute(scoring_work.delete().where(
                chunk, *mine, scoring_work.c.version == scoring_work.c.claimed_version))
            unclaimed["dirtied_at"] = now
        tx.execute(scoring_work.update().where(chunk, *mine).values(**unclaimed))


def backlog(connection: Connection) -> int:
    """Devices marked and not yet scored, claimed or not."""
    return int(connection.execute(sa.select(sa.func.count()).select_from(scoring_work)).scalar_one())
