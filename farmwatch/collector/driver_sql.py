"""The group commit's statements handed straight to the database driver, inside SQLAlchemy's transaction.

The group commit runs about a dozen statements per batch and a row per report in a few tables.
Through SQLAlchemy Core each statement cost ~45 us of Python before the driver saw it (compiled-cache
lookup, expanding IN lists, ``construct_params`` and a bind processor per value of every row,
``insertmanyvalues`` for INSERT ... RETURNING, the result proxy), against ~4 us for the driver's own
cursor: under bench/collector_ingest.py's load the committer thread spent most of its time there
(py-spy, cProfile; issue 13). Here a statement is plain SQL with ``:name`` parameters, turned into
the driver's parameter style once and run on the transaction's own DBAPI connection. A list value
expands to one parameter per element (``IN :devices``). Values go to the driver as they are, so
they must already be in the form Core would bind (:func:`stored_time` for a timestamp); rows come
back as the driver's tuples. A driver error is raised as SQLAlchemy's wrapper of it
(``sqlalchemy.exc.OperationalError`` ...), as Core would, so the group commit and the HTTP layer
tell a failed database from one report's problem as before.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from farmwatch.collector.tables import UtcDateTime
from farmwatch.errors import FarmwatchError

_NAME = re.compile(r":(\w+)")


class UnsupportedDriver(FarmwatchError):
    """The database driver takes parameters in a style this module does not write."""


@functools.cache
def in_driver_style(sql: str, paramstyle: str, sizes: tuple[tuple[str, int], ...] = ()) -> str:
    """``sql`` with its ``:name`` parameters as the driver takes them (sqlite3 reads ``:name`` itself;
    psycopg reads ``%(name)s``), each list parameter of ``sizes`` (name, length) spelt out as
    ``(:name_0, :name_1, ...)``."""
    for name, size in sizes:
        sql = re.sub(rf":{name}\b", "(" + ", ".join(f":{name}_{n}" for n in range(size)) + ")", sql)
    if paramstyle in ("qmark", "named"):
        return sql
    if paramstyle == "pyformat":
        return _NAME.sub(r"%(\1)s", sql)
    raise UnsupportedDriver(f"no driver SQL for parameter style {paramstyle!r}")


def execute_values(tx: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once in ``tx`` with its ``:rows`` spelt out as a ``VALUES`` list, one tuple per row of
    ``rows`` (all rows the same length; ``sql`` has no other parameter). One statement and one step of
    the driver for all rows, where the driver's ``executemany`` steps once per row: sqlite3 releases and retakes
    the GIL around each step, and the serving event loop shares the process (issue 13)."""
    if rows:
        bound = [value for row in rows for value in row]
        _run(tx, _values_in_driver_style(sql, tx.dialect.paramstyle, len(rows), len(rows[0])), bound)


@functools.cache
def _values_in_driver_style(sql: str, paramstyle: str, count: int, width: int) -> str:
    marks = {"qmark": "?", "pyformat": "%s", "format": "%s"}
    if paramstyle not in marks:
        raise UnsupportedDriver(f"no driver SQL for parameter style {paramstyle!r}")
    row = "(" + ", ".join([marks[paramstyle]] * width) + ")"
    return sql.replace(":rows", ", ".join([row] * count))


def fetch(tx: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of the query ``sql`` in ``tx``; a list value in ``params`` (never empty) expands in place."""
    sizes = tuple((name, len(value)) for name, value in params.items() if isinstance(value, list))
    bound = {name: value for name, value in params.items() if not isinstance(value, list)}
    for name, size in sizes:
        if not size:
            raise ValueError(f"the list parameter {name!r} is empty")
        bound.update((f"{name}_{n}", element) for n, element in enumerate(params[name]))
    return _run(tx, in_driver_style(sql, tx.dialect.paramstyle, sizes), bound)


def _run(tx: Connection, sql: str, params: Any) -> list[tuple[Any, ...]]:
    dialect = tx.dialect
    cursor = tx.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []  # psycopg: no rows to fetch
    except dialect.loaded_dbapi.Error as failure:
        raise sa.exc.DBAPIError.instance(sql, params, failure, dialect.loaded_dbapi.Error, dialect=dialect) from failure
    finally:
        cursor.close()


@functools.cache
def _time_processor(dialect: Dialect) -> Callable[[Any], Any] | None:
    return UtcDateTime().dialect_impl(dialect).bind_processor(dialect)


def stored_time(tx: Connection, moment: datetime) -> Any:
    """``moment`` (tz-aware) as a :class:`UtcDateTime` column binds it on ``tx``'s database: the same
    value Core would hand the driver (naive UTC; on SQLite, SQLAlchemy's text form of it)."""
    process = _time_processor(tx.dialect)
    return moment if process is None else process(moment)
