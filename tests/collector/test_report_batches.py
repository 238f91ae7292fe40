"""Reports that share one group-commit batch (issue 13: a few statements per batch instead of per report)
are judged as if stored one after another: a resend behind its original is a duplicate, other content
under a taken seq a conflict (and counted), a token revoked before the commit stores nothing, the quota
is charged in order. On SQLite and on PostgreSQL (skipped with the reason where it cannot start)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from collector_helpers import report_for

from farmwatch.collector.ingest import digest, ingest_record, parse_report
from farmwatch.collector.limits import Limits
from farmwatch.collector.storage import ArrivingReport, Storage, StoredReport, store_report_batch, token_digest
from farmwatch.collector.tables import device_quota, devices, reports, seq_conflicts

NOW = datetime.now(timezone.utc).replace(minute=10)  # well inside the current hour
GEO = {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = f"sqlite:///{tmp_path / 'batch.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    opened = Storage.open(url)
    try:
        yield opened
    finally:
        with opened.engine.begin() as tx:  # the PostgreSQL cluster is shared by the module
            for table in (seq_conflicts, device_quota, reports):
                tx.execute(table.delete())
        opened.close()


def arriving(device_id: str, seq: int, token: str, limits: Limits | None = None, **changes: object) -> ArrivingReport:
    report = parse_report(json.dumps(report_for(device_id, seq, **changes)).encode())
    record = ingest_record(report, NOW, "127.0.0.1", GEO)
    return ArrivingReport(record, digest(report), NOW, 1000, limits, token_digest(token))


def enrol(storage: Storage, device_id: str, token: str) -> None:
    storage.enrol(hardware_id=f"hw-{device_id}", hostname="h", source_ip="127.0.0.1", new_device_id=device_id,
                  token=token, now=NOW)


def test_one_batch_is_judged_report_by_report_in_arrival_order(storage: Storage) -> None:
    suffix = NOW.strftime("%H%M%S%f")  # the PostgreSQL database outlives one parameter: fresh ids
    device, other = f"dev-a{suffix}", f"dev-b{suffix}"
    enrol(storage, device, f"old-{suffix}")
    enrol(storage, device, f"live-{suffix}")  # enrolling again revokes the old token
    enrol(storage, other, f"other-{suffix}")
    two_an_hour = Limits(reports_per_device_per_hour=2)
    batch = [
        arriving(device, 1, f"live-{suffix}", two_an_hour),
        arriving(device, 1, f"live-{suffix}", two_an_hour),  # the same report again: a resend
        arriving(device, 1, f"live-{suffix}", two_an_hour, comment="other content"),  # seq 1 restarted
        arriving(device, 2, f"old-{suffix}", two_an_hour),  # its token was revoked
        arriving(device, 2, f"live-{suffix}", two_an_hour),
        arriving(device, 3, f"live-{suffix}", two_an_hour),  # the hour's two are spent
        arriving(other, 1, f"other-{suffix}", two_an_hour),  # another device's quota is its own
    ]
    with storage.engine.begin() as tx:
        outcomes = store_report_batch(tx, batch)
    stored, resend, conflict, revoked, second, over, neighbour = outcomes
    assert stored.new and stored.next_wait == second.next_wait  # the quota as the batch's commit leaves it
    assert resend == StoredReport(new=False, conflict=False)
    assert conflict == StoredReport(new=False, conflict=True)
    assert revoked == StoredReport(new=False, conflict=False, revoked=True)
    assert second.new and second.next_wait is not None and 0 < second.next_wait <= 3600  # spent until the hour ends
    assert not over.new and over.retry_after == second.next_wait
    assert neighbour.new and neighbour.next_wait is None
    with storage.engine.connect() as db:
        rows = db.execute(sa.select(reports.c.device_id, reports.c.seq, reports.c.digest)
                          .where(reports.c.device_id.in_([device, other])).order_by(reports.c.id)).all()
        assert [(row.device_id, row.seq) for row in rows] == [(device, 1), (device, 2), (other, 1)]
        assert rows[0].digest == batch[0].digest
        last = {row.device_id: row.last_seq for row in db.execute(
            sa.select(devices.c.device_id, devices.c.last_seq).where(devices.c.device_id.in_([device, other])))}
        assert last == {device: 2, other: 1}
        newest = dict(db.execute(sa.select(devices.c.device_id, devices.c.last_report_id)
                                 .where(devices.c.device_id.in_([device, other]))).all())
        stored_ids = dict(db.execute(sa.select(reports.c.device_id, sa.func.max(reports.c.id))
                                     .where(reports.c.device_id.in_([device, other])).group_by(reports.c.device_id)).all())
        assert newest == stored_ids  # each device points at its newest stored report (scoring reads it)
        counted = db.execute(sa.select(device_quota.c.reports).where(device_quota.c.device_id == device,
                                                                     device_quota.c.period == "hour")).scalar_one()
        assert counted == 2
        conflicts = db.execute(sa.select(seq_conflicts.c.conflicts).where(seq_conflicts.c.device_id == device)).scalar_one()
        assert conflicts == 1
        record = json.loads(db.execute(sa.select(reports.c.record).where(reports.c.device_id == device, reports.c.seq == 2)).scalar_one())
        assert record["enrolments"] == 2 and record["seq_conflicts"] == 1  # stamped as the batch left the device


def test_a_later_batch_sees_what_an_earlier_one_stored(storage: Storage) -> None:
    suffix = NOW.strftime("%H%M%S%f")
    device = f"dev-c{suffix}"
    enrol(storage, device, f"t-{suffix}")
    first = storage.submit_report(arriving(device, 1, f"t-{suffix}")).result(timeout=30)
    again = storage.submit_report(arriving(device, 1, f"t-{suffix}")).result(timeout=30)
    assert first.new and again == StoredReport(new=False, conflict=False)


def test_a_batch_writes_all_its_devices_in_one_statement_per_table(storage: Storage) -> None:
    suffix = NOW.strftime("%H%M%S%f")
    device, other = f"dev-d{suffix}", f"dev-e{suffix}"
    enrol(storage, device, f"d-{suffix}")
    enrol(storage, other, f"e-{suffix}")
    plenty = Limits(reports_per_device_per_hour=100)
    with storage.engine.begin() as tx:  # the device's quota rows exist before the batch, the other's do not
        store_report_batch(tx, [arriving(device, 1, f"d-{suffix}", plenty)])
    batch = [arriving(device, 2, f"d-{suffix}", plenty), arriving(other, 1, f"e-{suffix}", plenty),
             arriving(device, 4, f"d-{suffix}", plenty), arriving(device, 3, f"d-{suffix}", plenty)]
    statements: list[str] = []
    with storage.engine.begin() as tx:
        if tx.dialect.name == "sqlite":  # the driver's own trace: every statement it runs
            tx.connection.dbapi_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]
        assert all(outcome.new for outcome in store_report_batch(tx, batch))
        if tx.dialect.name == "sqlite":
            tx.connection.dbapi_connection.set_trace_callback(None)  # type: ignore[union-attr]
            writes = [sql.split("(")[0].split(" SET")[0].strip() for sql in statements if not sql.startswith("SELECT")]
            assert sorted(writes) == [f"INSERT INTO {device_quota.name}", f"INSERT INTO {reports.name}",
                                      f"UPDATE {devices.name}"]
    with storage.engine.connect() as db:
        ids = {(row.device_id, row.seq): row.id for row in db.execute(
            sa.select(reports.c.device_id, reports.c.seq, reports.c.id).where(reports.c.device_id.in_([device, other])))}
        assert sorted(ids) == [(device, 1), (device, 2), (device, 3), (device, 4), (other, 1)]
        newest = {row.device_id: (row.last_seq, row.last_report_id) for row in db.execute(
            sa.select(devices.c.device_id, devices.c.last_seq, devices.c.last_report_id)
            .where(devices.c.device_id.in_([device, other])))}
        # the highest seq, and the report the device sent last (seq 3, after its seq 4)
        assert newest == {device: (4, ids[(device, 3)]), other: (1, ids[(other, 1)])}
        used = {(row.device_id, row.period): (row.reports, row.bytes) for row in db.execute(
            sa.select(device_quota).where(device_quota.c.device_id.in_([device, other])))}
        assert used == {(device, "hour"): (4, 4000), (device, "day"): (4, 4000),
                        (other, "hour"): (1, 1000), (other, "day"): (1, 1000)}
