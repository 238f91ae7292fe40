"""The shared work table replicas score from: changed devices marked once, disjoint claims, lapsed claims
retaken, re-marked devices kept.

Run on SQLite and on a real PostgreSQL (root only), where two claims racing in open transactions
must each get other devices without waiting (``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_scoring_state import store_report

from farmwatch.collector import scoring_work
from farmwatch.collector.rollups import aged_out_devices, catch_up, changed_devices
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import rollup_progress
from farmwatch.collector.tables import scoring_work as work_table

T0 = datetime(2026, 11, 28, 5, 0, tzinfo=timezone.utc)
DEVICES = [f"dev-{n:02d}" for n in range(10)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.slow, pytest.mark.root])])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = f"sqlite:///{tmp_path / 'work.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    opened = Storage.open(url)
    with opened.engine.begin() as tx:  # the postgres fixture is shared by the module's tests
        tx.execute(work_table.delete())
        tx.execute(rollup_progress.delete().where(rollup_progress.c.name == scoring_work.MARKED))
    try:
        yield opened
    finally:
        opened.close()


def _mark(storage: Storage, devices: list[str], at: datetime) -> None:
    with storage._writer.begin() as tx:
        scoring_work.mark(tx, devices, at)


def test_replicas_claim_disjoint_batches_and_finish_them(storage: Storage) -> None:
    _mark(storage, DEVICES, T0)
    first = storage.claim_scoring("a", T0, 60, limit=4)
    second = storage.claim_scoring("b", T0, 60, limit=4)
    third = storage.claim_scoring("c", T0, 60, limit=4)
    assert (len(first.devices), len(second.devices), len(third.devices)) == (4, 4, 2)
    assert sorted(first.devices + second.devices + third.devices) == DEVICES
    assert storage.claim_scoring("d", T0, 60, limit=4).devices == ()  # everything is held
    for claim in (first, second, third):
        storage.save_verdicts([], 0, claim=claim, now=T0)
    assert storage.scoring_backlog() == 0


def test_a_device_marked_again_while_scored_stays_for_the_next_tick(storage: Storage) -> None:
    _mark(storage, DEVICES[:2], T0)
    claim = storage.claim_scoring("a", T0, 60, limit=10)
    _mark(storage, [DEVICES[1]], T0 + timedelta(seconds=5))  # a report stored during scoring
    done_at = T0 + timedelta(seconds=10)
    storage.save_verdicts([], 0, claim=claim, now=done_at)
    assert storage.scoring_backlog() == 1
    # The same tick (marks up to T0) does not take it again; the next tick does.
    assert storage.claim_scoring("b", done_at, 60, limit=10, dirtied_by=T0).devices == ()
    assert storage.claim_scoring("b", done_at, 60, limit=10, dirtied_by=done_at).devices == (DEVICES[1],)


def test_a_claim_among_given_devices_takes_only_those_marked_free_and_due(storage: Storage) -> None:
    """What a batch's neighbours are claimed with: only devices among those named, marked by the tick,
    not held by anyone; never an unmarked one."""
    _mark(storage, DEVICES[:6], T0)
    _mark(storage, [DEVICES[6]], T0 + timedelta(seconds=30))  # marked after this tick began
    held = storage.claim_scoring("other", T0, 60, limit=1)  # DEVICES[0]
    among = [DEVICES[0], DEVICES[2], DEVICES[3], DEVICES[6], DEVICES[8]]  # DEVICES[8]: never marked
    taken = storage.claim_scoring("a", T0, 60, limit=10, dirtied_by=T0, among=among)
    assert held.devices == (DEVICES[0],)
    assert sorted(taken.devices) == [DEVICES[2], DEVICES[3]]
    assert storage.claim_scoring("b", T0, 60, limit=1, dirtied_by=T0, among=DEVICES[2:6]).devices == (DEVICES[4],)


def test_a_dead_replicas_claim_lapses_and_is_retaken(storage: Storage) -> None:
    _mark(storage, DEVICES[:3], T0)
    dead = storage.claim_scoring("dead", T0, 60, limit=10)
    assert storage.claim_scoring("alive", T0 + timedelta(seconds=59), 60, limit=10).devices == ()
    retaken = storage.claim_scoring("alive", T0 + timedelta(seconds=61), 60, limit=10)
    assert retaken.devices == dead.devices
    storage.save_verdicts([], 0, claim=dead, now=T0 + timedelta(seconds=62))  # it woke up late: finishes nothing
    assert storage.scoring_backlog() == 3
    storage.save_verdicts([], 0, claim=retaken, now=T0 + timedelta(seconds=63))
    assert storage.scoring_backlog() == 0


def test_a_failed_run_gives_its_devices_back_unchanged(storage: Storage) -> None:
    _mark(storage, DEVICES[:2], T0)
    claim = storage.claim_scoring("a", T0, 60, limit=10)
    storage.release_claim(claim, T0 + timedelta(seconds=1))
    again = storage.claim_scoring("b", T0 + timedelta(seconds=2), 60, limit=10, dirtied_by=T0)
    assert again.devices == claim.devices  # still marked as of T0: the same tick may retry them


def test_marking_one_device_twice_in_one_call_is_one_upsert(storage: Storage) -> None:
    _mark(storage, ["dev-x", "dev-x", "dev-y"], T0)
    _mark(storage, ["dev-x"], T0 + timedelta(seconds=1))
    with storage.engine.connect() as connection:
        versions = dict(connection.execute(sa.select(work_table.c.device_id, work_table.c.version)).all())
        first_marks = set(connection.execute(sa.select(work_table.c.dirtied_at)).scalars())
    assert versions == {"dev-x": 2, "dev-y": 1}
    assert first_marks == {T0}  # a second mark keeps the first time: the device has waited since then


@pytest.mark.slow
@pytest.mark.root
def test_concurrent_claims_on_postgresql_skip_each_others_rows(postgres: str) -> None:
    storage = Storage.open(postgres)
    try:
        with storage.engine.begin() as tx:
            tx.execute(work_table.delete())
        _mark(storage, DEVICES, T0)
        holding = threading.Event()
        finish = threading.Event()
        held: list[scoring_work.Claim] = []

        def claim_and_hold() -> None:
            with storage.engine.begin() as tx:  # the claim's row locks stay until this commits
                held.append(scoring_work.claim(tx, "slow", T0, 60, 6))
                holding.set()
                finish.wait(30)

        slow = threading.Thread(target=claim_and_hold)
        slow.start()
        assert holding.wait(30)
        # In a transaction with a 5 s lock timeout: waiting for the other's rows would fail here.
        with storage.engine.begin() as tx:
            tx.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
            other = scoring_work.claim(tx, "fast", T0, 60, 10)
        finish.set()
        slow.join(30)
        assert len(held[0].devices) == 6 and len(other.devices) == 4
        assert sorted(held[0].devices + other.devices) == DEVICES
    finally:
        storage.close()


def test_the_devices_whose_rollups_changed_are_marked_once(storage: Storage) -> None:
    """Reports reduced into rollups mark their devices; asking again marks nothing until more arrive."""
    for device in ("dev-a", "dev-b"):
        storage.enrol(hardware_id=f"hw-{device}", hostname="h", source_ip="127.0.0.1", new_device_id=device,
                      token=f"t-{device}", now=T0)
        store_report(storage, device, 1, T0)
    catch_up(storage, T0)

    def mark() -> int:
        return storage.mark_changed(lambda since: changed_devices(storage, since), T0)

    def versions() -> dict[str, int]:
        with storage.engine.connect() as connection:
            return dict(connection.execute(sa.select(work_table.c.device_id, work_table.c.version)).all())

    assert mark() >= 2 and set(versions()) >= {"dev-a", "dev-b"}
    before = versions()
    assert mark() == 0 and versions() == before  # nothing reduced since: no version moves
    store_report(storage, "dev-a", 2, T0 + timedelta(minutes=5))
    catch_up(storage, T0 + timedelta(minutes=5))
    assert mark() >= 1 and versions()["dev-a"] == before["dev-a"] + 1


def test_devices_whose_windows_leave_the_lookback_are_marked_once_per_hour(storage: Storage) -> None:
    """A device that went quiet changes nothing new, yet its frames lose windows as they age out:
    it is marked when the hour of its windows has wholly left the lookback, once across calls."""
    for device, at in (("dev-quiet", T0), ("dev-later", T0 + timedelta(hours=2))):
        storage.enrol(hardware_id=f"hw-{device}", hostname="h", source_ip="127.0.0.1", new_device_id=device,
                      token=f"t-{device}", now=T0)
        store_report(storage, device, 1, at)
    catch_up(storage, T0 + timedelta(hours=2))
    with storage._writer.begin() as tx:
        tx.execute(rollup_progress.delete().where(rollup_progress.c.name == scoring_work.AGED_OUT))
        tx.execute(work_table.delete())

    def mark(lookback_start: datetime) -> set[str]:
        storage.mark_aged_out(lambda after, through: aged_out_devices(storage, after, through), lookback_start, T0)
        with storage.engine.connect() as connection:
            marked = set(connection.execute(sa.select(work_table.c.device_id)).scalars())
        return marked & {"dev-quiet", "dev-later"}  # the postgres fixture is shared by the module's tests

    assert mark(T0 - timedelta(hours=1)) == set()  # the first call records where the lookback starts
    assert mark(T0 + timedelta(minutes=30)) == set()  # T0's hour has only begun to leave
    assert mark(T0 + timedelta(hours=1)) == {"dev-quiet"}  # wholly gone: its device lost windows
    with storage._writer.begin() as tx:
        tx.execute(work_table.delete())
    assert mark(T0 + timedelta(hours=1, minutes=5)) == set()  # that hour is marked once
    assert mark(T0 + timedelta(hours=3)) == {"dev-later"}


def test_the_change_set_is_read_before_the_write_lock_and_again_only_if_another_marked(storage: Storage) -> None:
    """The read of what changed (a join over the sightings: over 10 s at 20,000 laptops) happens
    before the write lock, so another scoring process can mark meanwhile instead of waiting past
    SQLite's busy timeout ("database is locked"); a mark made in between is not repeated."""
    storage.enrol(hardware_id="hw-ahead", hostname="h", source_ip="127.0.0.1", new_device_id="dev-ahead",
                  token="t-ahead", now=T0)
    store_report(storage, "dev-ahead", 1, T0)
    catch_up(storage, T0)
    others: list[int] = []

    def changed(since: int) -> tuple[set[str], int]:
        if not others:  # another replica marks while this one reads (it would wait on a held write lock)
            others.append(storage.mark_changed(lambda s: changed_devices(storage, s), T0))
        return changed_devices(storage, since)

    assert storage.mark_changed(changed, T0) == 0  # read again under the lock: nothing since the other's mark
    assert others[0] >= 1  # the postgres fixture is shared: earlier tests' devices are marked too
    with storage.engine.connect() as connection:
        versions = dict(connection.execute(sa.select(work_table.c.device_id, work_table.c.version)).all())
    assert versions["dev-ahead"] == 1 and set(versions.values()) == {1}  # each marked once
