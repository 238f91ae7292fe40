"""The collector's schema, kept current by Alembic (revisions in ``farmwatch/collector/migrations/``).

The revisions ship inside the package and are found with :mod:`importlib.resources`, so an installed
wheel (the container image) migrates without an ``alembic.ini`` or a source checkout. Every upgrade
runs in one transaction under a lock, so replicas that start together on an empty or older database
upgrade it once and the others find it current:

* PostgreSQL: a transaction-scoped advisory lock, and PostgreSQL's transactional DDL;
* SQLite: ``BEGIN IMMEDIATE`` (the write lock), with foreign-key enforcement off for the duration,
  as SQLite's own procedure for table rebuilds asks (https://www.sqlite.org/lang_altertable.html,
  "Making Other Kinds Of Table Schema Changes"), and ``PRAGMA foreign_key_check`` before the commit.

A database made by ``metadata.create_all`` before Alembic (release a99bc29 and earlier) has every
table of the baseline revision and no ``alembic_version``: it is stamped with the baseline and
upgraded from there, never recreated.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError as AlembicCommandError
from sqlalchemy.engine import Connection, Engine

from farmwatch.collector.tables import metadata
from farmwatch.errors import FarmwatchError

BASELINE = "0001"  # the schema of release a99bc29, the last one made by create_all
SCHEMA_LOCK_KEY = 0x6661726D  # "farm": the advisory lock held while a replica migrates the schema
MigrateMode = Literal["auto", "check"]
MIGRATE_MODES: tuple[MigrateMode, ...] = ("auto", "check")


class SchemaError(FarmwatchError, RuntimeError):
    """The database's schema cannot be used or migrated; the message says why and what to run."""


@dataclass(frozen=True)
class Revision:
    """One migration: its id, the one it follows, and its one-line description."""

    revision: str
    down_revision: str | None
    doc: str


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: the revision found (None: empty database) and the one left."""

    before: str | None
    after: str
    adopted: bool  # the database was made by create_all before Alembic and was stamped with the baseline


def _config() -> Config:
    config = Config()
    location = importlib.resources.files("farmwatch.collector") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    scripts = ScriptDirectory.from_config(_config())
    try:
        scripts.get_heads()  # builds the revision map: a down_revision naming no revision fails here
    except (KeyError, AlembicCommandError) as broken:
        raise SchemaError(f"the collector's migrations are incomplete: {broken} is named as a down_revision but no "
                          "file in farmwatch/collector/migrations/versions/ has that revision") from None
    return scripts


def head() -> str:
    """The revision this collector's code expects."""
    heads = _scripts().get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the collector's migrations have {len(heads)} heads ({', '.join(heads)}); "
                          "one revision must follow the other (farmwatch/collector/migrations/README.md)")
    return heads[0]


def history() -> list[Revision]:
    """Every revision, oldest first."""
    scripts = list(_scripts().walk_revisions())
    return [
        Revision(script.revision, _single(script.down_revision), (script.doc or "").strip())
        for script in reversed(scripts)
    ]


def _single(down: str | Sequence[str] | None) -> str | None:
    return down if down is None or isinstance(down, str) else ", ".join(down)


def current(connection: Connection) -> str | None:
    """The database's revision; None for an empty database (or one made before Alembic)."""
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise SchemaError(f"the database records {len(heads)} schema revisions ({', '.join(heads)}); expected one")
    return heads[0] if heads else None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current(connection)


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to :func:`head` under the schema lock (a no-op when it is there)."""
    refuse_non_utf8(engine)
    target = head()
    found = current_revision(engine)
    if found == target:  # the common start: nothing to do, and no lock to queue for
        _refuse_undeclared_tables(engine)
        return Upgrade(before=found, after=target, adopted=False)
    with _migrating(engine) as connection:
        before = current(connection)
        adopted = before is None and _made_before_alembic(connection)
        if adopted:
            before = BASELINE
            command.stamp(alembic_config(connection), BASELINE)
        _refuse_unknown(before)
        if before != target:
            command.upgrade(alembic_config(connection), target)
    _refuse_undeclared_tables(engine)
    return Upgrade(before=before, after=target, adopted=adopted)


def ensure_current(engine: Engine) -> None:
    """Raise :class:`SchemaError` naming ``db upgrade`` unless the database is at :func:`head`."""
    refuse_non_utf8(engine)
    target = head()
    found = current_revision(engine)
    if found == target:
        _refuse_undeclared_tables(engine)
        return
    _refuse_unknown(found)
    where = "is empty (or was made before migrations)" if found is None else f"is at schema revision {found}"
    raise SchemaError(
        f"the database {where}; this collector needs revision {target}. Run `farmwatch-collector db upgrade "
        "--db URL` once (the migration step of the deployment), then start the collector "
        '(it was told not to migrate: [storage] migrate = "check")'
    )


def refuse_non_utf8(engine: Engine) -> None:
    """Refuse a PostgreSQL database whose encoding is not UTF-8 (e.g. SQL_ASCII, which stores bytes
    unchecked): reports carry any Unicode hostname.

    Asked over a plain psycopg connection, before SQLAlchemy's first connection: on SQL_ASCII psycopg
    returns text as bytes, and SQLAlchemy's dialect set-up fails on them with a TypeError. When the
    server cannot be reached, the caller's own connection reports it.
    """
    if engine.dialect.name != "postgresql":
        return
    import psycopg  # the driver open_engine uses for PostgreSQL

    try:
        with psycopg.connect(engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                             connect_timeout=30) as connection:
            row = connection.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database "
                                     "WHERE datname = current_database()").fetchone()
    except psycopg.Error:
        return
    found = row[0] if row else None
    encoding = found.decode("ascii", "replace") if isinstance(found, bytes) else str(found)
    if encoding != "UTF8":
        name = engine.url.database
        raise SchemaError(
            f"database {name!r} has encoding {encoding}; farmwatch needs UTF8. Create it with "
            f"`CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0` (or `createdb -E UTF8 -T template0 {name}`)"
        )


def _refuse_undeclared_tables(engine: Engine) -> None:
    """A table in tables.py that no revision creates would fail at its first use: fail now, naming it."""
    with engine.connect() as connection:
        missing = sorted(set(metadata.tables) - set(sa.inspect(connection).get_table_names()))
    if missing:
        raise SchemaError(f"tables.py declares {', '.join(missing)} but no migration creates them: add a revision "
                          "(farmwatch/collector/migrations/README.md)")


def _refuse_unknown(found: str | None) -> None:
    if found is not None and found not in {revision.revision for revision in history()}:
        raise SchemaError(
            f"the database is at schema revision {found}, which this collector does not know: a newer release "
            "migrated it. Run that release (or newer); migrations are not reversed automatically"
        )


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for this package's revisions, migrating over ``connection``."""
    config = _config()
    config.attributes["connection"] = connection
    return config


def _made_before_alembic(connection: Connection) -> bool:
    """True when the baseline's tables exist without ``alembic_version``; refuse a partial schema."""
    baseline_tables = set(_baseline_tables())
    present = set(sa.inspect(connection).get_table_names()) & baseline_tables
    if not present:
        return False
    if present != baseline_tables:
        missing = ", ".join(sorted(baseline_tables - present))
        raise SchemaError(f"the database has some of the collector's tables but not {missing} and no "
                          "alembic_version: it was not made by farmwatch; refusing to migrate it")
    return True


def _baseline_tables() -> tuple[str, ...]:
    script = _scripts().get_revision(BASELINE)
    assert script is not None
    tables: tuple[str, ...] = script.module.TABLES  # the baseline revision lists the tables it creates
    return tables


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction holding the schema lock (see the module docstring)."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            driver = connection.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA foreign_keys=OFF")  # only outside a transaction does this take effect
            try:
                with connection.execution_options(write=True).begin():  # BEGIN IMMEDIATE: the write lock
                    yield connection
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise SchemaError(f"the migration left {len(broken)} rows with broken foreign keys "
                                          f"(first: {tuple(broken[0])}); nothing was changed")
            finally:
                driver.execute("PRAGMA foreign_keys=ON")
        else:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                yield connection
