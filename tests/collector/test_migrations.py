"""Schema migrations (farmwatch.collector.migrate) on real SQLite files and a real PostgreSQL server.

The previous release's schema comes from tests/fixtures/schema_a99bc29/ (dumps generated from the
tables module at commit a99bc29, the last release that made its tables with create_all).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from postgres_server import new_database as new_postgres_database

from farmwatch.collector import migrate
from farmwatch.collector.storage import Storage, open_engine
from farmwatch.collector.tables import metadata

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "schema_a99bc29"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
RECORD = '{"received_at": "2026-11-30T12:00:00Z", "kept": true}'


def load_legacy(url: str) -> None:
    """Create the tables exactly as release a99bc29 did (its schema dump)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.executescript((LEGACY / "sqlite.sql").read_text())
    else:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute((LEGACY / "postgresql.sql").read_text().encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend (PostgreSQL: skipped with the reason where it cannot run)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'farmwatch.db'}"
    else:
        postgres = request.getfixturevalue("postgres")
        yield new_postgres_database(postgres, f"mig_{abs(hash(request.node.name)) % 10**8}")


def schema_of(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), keys and indexes, as the database reports them."""
    inspector = sa.inspect(engine)
    found: dict[str, Any] = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        found[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": sorted(
                (tuple(k["constrained_columns"]), k["referred_table"], tuple(k["referred_columns"]),
                 k.get("options", {}).get("ondelete")) for k in inspector.get_foreign_keys(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        }
    return found


def test_one_head_and_the_baseline_first() -> None:
    revisions = migrate.history()
    assert revisions[0].revision == migrate.BASELINE and revisions[0].down_revision is None
    followers = [r.down_revision for r in revisions[1:]]
    assert sorted(followers) == sorted(r.revision for r in revisions[:-1]), "every revision follows exactly one other"
    assert migrate.head() == revisions[-1].revision


@pytest.mark.slow
def test_migrations_make_exactly_the_tables_of_tables_py(fresh_url: str) -> None:
    """What a newcomer's database gets by migrating is what tables.py declares (a missing revision fails here)."""
    engine = open_engine(fresh_url)
    try:
        done = migrate.upgrade(engine)
        assert (done.before, done.after, done.adopted) == (None, migrate.head(), False)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), metadata)
        assert differences == []
    finally:
        engine.dispose()


@pytest.mark.slow
def test_the_baseline_is_release_a99bc29s_schema(fresh_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if fresh_url.startswith("sqlite"):
        legacy_url = f"sqlite:///{tmp_path / 'legacy.db'}"
    else:
        legacy_url = new_postgres_database(request.getfixturevalue("postgres"), "legacy_schema")
    load_legacy(legacy_url)
    baseline, legacy = open_engine(fresh_url), open_engine(legacy_url)
    try:
        with baseline.connect() as connection:
            command.upgrade(migrate.alembic_config(connection), migrate.BASELINE)
            connection.commit()
        assert schema_of(baseline) == schema_of(legacy)
    finally:
        baseline.dispose()
        legacy.dispose()


@pytest.mark.slow
def test_on_postgresql_report_records_and_rollup_windows_are_compressed_with_lz4(postgres: str) -> None:
    """Both texts pass PostgreSQL's compression threshold once per stored report; lz4 costs the server
    a fraction of pglz's CPU (migration 0007). A value stored before the migration still reads."""
    url = new_postgres_database(postgres, "lz4_texts")
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            command.upgrade(migrate.alembic_config(connection), "0006")
            connection.commit()
        seed_legacy_rows(url)
        migrate.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO reports (device_id, seq, digest, received_at, record) "
                                       "VALUES ('dev-old', 8, :digest, :at, :record)"),
                               {"digest": "e" * 64, "at": T0.replace(tzinfo=None), "record": RECORD * 200})
            methods = dict(connection.execute(sa.text(
                "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute "
                "WHERE (attrelid, attname) IN (('reports'::regclass, 'record'), ('rollups'::regclass, 'windows'))")).all())
            stored = dict(connection.execute(sa.text(
                "SELECT seq, pg_column_compression(record) FROM reports")).all())
            assert connection.execute(sa.text("SELECT record FROM reports WHERE seq = 7")).scalar_one() == RECORD
    finally:
        engine.dispose()
    assert methods == {"reports.record": "l", "rollups.windows": "l"}
    assert stored == {7: None, 8: "lz4"}  # the short legacy record is not compressed at all


def seed_legacy_rows(url: str) -> None:
    """Rows the previous release would have written, through its own columns."""
    engine = open_engine(url)
    legacy = sa.MetaData()
    legacy.reflect(engine)
    with engine.begin() as connection:
        connection.execute(legacy.tables["devices"].insert().values(
            device_id="dev-old", hardware_id="hw-old", hostname="old-host", enrolled_at=T0.replace(tzinfo=None),
            last_seen=T0.replace(tzinfo=None), last_seq=7, last_report_id=1))
        connection.execute(legacy.tables["tokens"].insert().values(
            token_sha256="a" * 64, device_id="dev-old", issued_at=T0.replace(tzinfo=None)))
        connection.execute(legacy.tables["reports"].insert().values(
            device_id="dev-old", seq=7, digest="d" * 64, received_at=T0.replace(tzinfo=None), record=RECORD))
        connection.execute(legacy.tables["audit_log"].insert().values(
            at=T0.replace(tzinfo=None), analyst="alice", action="view_device", device_id="dev-old", detail=""))
    engine.dispose()


@pytest.mark.slow
def test_a_database_made_before_alembic_is_adopted_and_keeps_its_data(fresh_url: str) -> None:
    load_legacy(fresh_url)
    seed_legacy_rows(fresh_url)
    engine = open_engine(fresh_url)
    try:
        done = migrate.upgrade(engine)
        assert (done.before, done.after, done.adopted) == (migrate.BASELINE, migrate.head(), True)
        assert migrate.current_revision(engine) == migrate.head()
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT device_id, seq, record FROM reports")).all() == [
                ("dev-old", 7, RECORD)]
            assert connection.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one() == 1
    finally:
        engine.dispose()
    storage = Storage.open(fresh_url)  # and the collector goes on reading it
    try:
        assert storage.device_count() == 1
        assert storage.device_records("dev-old") == [json.loads(RECORD)]
        assert migrate.upgrade(storage.engine).before == migrate.head()  # a second start changes nothing
    finally:
        storage.close()


@pytest.mark.slow
def test_check_mode_refuses_an_old_or_empty_schema_and_names_the_command(fresh_url: str) -> None:
    with pytest.raises(migrate.SchemaError, match=r"is empty .* needs revision \d+\. Run `farmwatch-collector db upgrade"):
        Storage.open(fresh_url, migrate="check")
    load_legacy(fresh_url)
    with pytest.raises(migrate.SchemaError, match=r"needs revision \d+\. Run `farmwatch-collector db upgrade"):
        Storage.open(fresh_url, migrate="check")
    Storage.open(fresh_url).close()  # auto migrates; now check mode opens it
    Storage.open(fresh_url, migrate="check").close()


@pytest.mark.slow
def test_a_partial_foreign_schema_is_refused_not_adopted(fresh_url: str) -> None:
    engine = open_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE devices (device_id VARCHAR(128) PRIMARY KEY)"))
        with pytest.raises(migrate.SchemaError, match="not made by farmwatch"):
            migrate.upgrade(engine)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_database_from_a_newer_release_is_refused(fresh_url: str) -> None:
    Storage.open(fresh_url).close()
    engine = open_engine(fresh_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        for attempt in (migrate.upgrade, migrate.ensure_current):
            with pytest.raises(migrate.SchemaError, match="revision 9999, which this collector does not know"):
                attempt(engine)
    finally:
        engine.dispose()


def test_a_table_declared_without_a_revision_is_named(tmp_path: Path) -> None:
    """tables.py gained a table and nobody wrote its revision: opening the store says so, by name."""
    forgotten = sa.Table("forgotten_rollups", metadata, sa.Column("id", sa.Integer, primary_key=True))
    try:
        with pytest.raises(migrate.SchemaError, match="tables.py declares forgotten_rollups but no migration creates"):
            Storage.open(f"sqlite:///{tmp_path / 'farmwatch.db'}")
    finally:
        metadata.remove(forgotten)


def test_concurrent_sqlite_upgrades_migrate_once(tmp_path: Path) -> None:
    """Several processes' worth of opens on one SQLite file: BEGIN IMMEDIATE lets one migrate."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    url = f"sqlite:///{tmp_path / 'farmwatch.db'}"
    load_legacy(url)
    barrier = Barrier(4)

    def upgrade_at_once(_: int) -> migrate.Upgrade:
        engine = open_engine(url)
        barrier.wait()
        try:
            return migrate.upgrade(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(upgrade_at_once, range(4)))
    assert sum(r.adopted for r in results) == 1
    assert {r.after for r in results} == {migrate.head()}


