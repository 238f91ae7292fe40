"""Alembic's environment for the collector's schema; run only through :mod:`farmwatch.collector.migrate`.

That module hands over a connection already in a transaction holding the schema lock
(``config.attributes["connection"]``); there is no ``alembic.ini`` and no offline (``--sql``) mode.
SQLite cannot alter most of a table in place, so revisions render as batch operations there
(``render_as_batch``: Alembic copies the table). How to add a revision: README.md in this folder.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from farmwatch.collector.migrate import SchemaError
from farmwatch.collector.tables import UtcDateTime, metadata


def render_item(kind: str, item: Any, autogen: AutogenContext) -> str | Literal[False]:
    """Autogenerate writes UtcDateTime (Python-side conversion only) as the plain column type it is."""
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime()"
    return False


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if not isinstance(given, Connection):
    raise SchemaError("run migrations with `farmwatch-collector db upgrade` (farmwatch.collector.migrate), "
                       "which passes the connection; there is no alembic.ini")
run_migrations(given)
