"""The group commit's driver statements (driver_sql.py) on a real SQLite file and a real PostgreSQL
(skipped with the reason where it cannot start): list parameters expand, a VALUES list writes many
rows in one statement, times are bound as Core
binds them, and a driver error arrives as SQLAlchemy's wrapper, so the group commit still tells a
failed database (OperationalError: the whole batch is refused with 503) from one report's problem."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from farmwatch.collector import driver_sql
from farmwatch.collector.tables import UtcDateTime

MOMENT = datetime(2026, 12, 4, 23, 30, 15, 123456, tzinfo=timezone.utc)
things = sa.Table("driver_sql_things", sa.MetaData(), sa.Column("name", sa.String(32), primary_key=True),
                  sa.Column("seen", UtcDateTime(), nullable=False))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'driver.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    things.drop(engine, checkfirst=True)
    things.create(engine)
    try:
        yield engine
    finally:
        things.drop(engine)
        engine.dispose()


def test_rows_written_through_the_driver_read_back_as_core_wrote_them(engine: sa.Engine) -> None:
    with engine.begin() as tx:
        tx.execute(things.insert().values(name="by-core", seen=MOMENT))
        driver_sql.execute_values(tx, f"INSERT INTO {things.name} (name, seen) VALUES :rows",
                                  [(f"by-driver-{n}", driver_sql.stored_time(tx, MOMENT)) for n in range(3)])
    with engine.connect() as db:
        read = dict(db.execute(sa.select(things.c.name, things.c.seen)).all())
    assert read == {"by-core": MOMENT, "by-driver-0": MOMENT, "by-driver-1": MOMENT, "by-driver-2": MOMENT}
    with engine.begin() as tx:
        found = driver_sql.fetch(tx, f"SELECT name, seen FROM {things.name} WHERE name IN :names AND seen = :seen "
                                     "ORDER BY name", {"names": ["by-core", "by-driver-1", "absent"],
                                                       "seen": driver_sql.stored_time(tx, MOMENT)})
        assert [name for name, _ in found] == ["by-core", "by-driver-1"]  # Core's and the driver's forms agree
        with pytest.raises(ValueError, match="'names' is empty"):
            driver_sql.fetch(tx, f"SELECT name FROM {things.name} WHERE name IN :names", {"names": []})


def test_a_driver_error_is_raised_as_sqlalchemys_wrapper(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as tx:
            driver_sql.execute_values(tx, f"INSERT INTO {things.name} (name, seen) VALUES :rows",
                                      [("twice", driver_sql.stored_time(tx, MOMENT))] * 2)
    with pytest.raises(sa.exc.ProgrammingError if engine.dialect.name == "postgresql" else sa.exc.OperationalError):
        with engine.begin() as tx:
            driver_sql.fetch(tx, "SELECT name FROM no_such_table WHERE name = :name", {"name": "x"})
    with engine.connect() as db:
        assert db.execute(sa.select(sa.func.count()).select_from(things)).scalar_one() == 0  # nothing half-written


def test_one_statement_updates_many_rows_from_a_values_list(engine: sa.Engine) -> None:
    later = MOMENT.replace(hour=0)
    with engine.begin() as tx:
        tx.execute(things.insert(), [{"name": name, "seen": MOMENT} for name in ("a", "b", "c")])
        driver_sql.execute_values(tx, f"UPDATE {things.name} SET seen = given.column2 FROM (VALUES :rows) AS given "
                                      f"WHERE {things.name}.name = given.column1",
                                  [(name, driver_sql.stored_time(tx, later)) for name in ("a", "c", "absent")])
    with engine.connect() as db:
        assert dict(db.execute(sa.select(things.c.name, things.c.seen)).all()) == {"a": later, "b": MOMENT, "c": later}


def test_parameters_are_written_in_the_drivers_style() -> None:
    sql = "SELECT a FROM t WHERE b IN :names AND c = :c AND d IN :named"
    assert driver_sql.in_driver_style(sql, "qmark", (("names", 2),)) == (
        "SELECT a FROM t WHERE b IN (:names_0, :names_1) AND c = :c AND d IN :named")
    assert driver_sql.in_driver_style(sql, "pyformat", (("names", 1), ("named", 1))) == (
        "SELECT a FROM t WHERE b IN (%(names_0)s) AND c = %(c)s AND d IN (%(named_0)s)")
    with pytest.raises(driver_sql.UnsupportedDriver):
        driver_sql.in_driver_style(sql, "format")
    values = "INSERT INTO t (a, b) VALUES :rows"
    assert driver_sql._values_in_driver_style(values, "qmark", 2, 2) == "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
    assert driver_sql._values_in_driver_style(values, "pyformat", 1, 2) == "INSERT INTO t (a, b) VALUES (%s, %s)"
