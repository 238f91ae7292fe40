"""``farmwatch-collector db upgrade|current|history|prune``: the database's schema and its retention.

``db upgrade`` is the deployment's migration step (the compose file's ``migrate`` service, the
Kubernetes migration Job); collectors configured with ``[storage] migrate = "check"`` refuse to
start until it ran. ``db prune`` runs the retention job (farmwatch/collector/retention.py) once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from farmwatch.collector.command_support import CommandError, database_url, open_existing
from farmwatch.collector import migrate
from farmwatch.collector.config import load_retention_config
from farmwatch.collector.retention import RULES, prune
from farmwatch.collector.storage import StoreError, open_engine

BEHIND_EXIT = 3  # `db current`: the schema is not this release's


def add_commands(commands: argparse._SubParsersAction, db_flag: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    """Add the ``db`` group to the collector's command line."""
    group = commands.add_parser(
        "db", help="upgrade the database's tables, show their version, prune old data",
        description="The collector keeps its tables in the database given by --db. A new release may "
        "need new tables or columns: `db upgrade` makes them (Alembic migrations shipped with the "
        "collector). `serve` does this by itself at start unless its config says [storage] migrate = "
        '"check" (several replicas: run `db upgrade` once as a separate step instead).',
    )
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)

    upgrade = actions.add_parser(
        "upgrade", help="bring the tables to this release's schema (safe to repeat)",
        description="Create or change the tables so they match what this release of the collector needs. "
        "Safe to run again (nothing happens when they already match) and while collectors run: on "
        "PostgreSQL it holds a lock, so upgrades started together run once. A database made by a release "
        "before migrations existed is recognised and kept, not recreated. The whole upgrade is one "
        "transaction: it applies fully or not at all.",
        epilog="Example: farmwatch-collector db upgrade --db postgresql://farmwatch@db.internal/farmwatch",
    )
    db_flag(upgrade)
    upgrade.set_defaults(run=_upgrade)

    current = actions.add_parser(
        "current", help="print the database's schema revision; exit 3 when it needs `db upgrade`",
        description="Print the schema revision the database is at and the one this collector needs. Exits 0 "
        f"when they match, {BEHIND_EXIT} when the database needs `db upgrade` (or is empty). Changes nothing.",
    )
    db_flag(current)
    current.set_defaults(run=_current)

    history = actions.add_parser(
        "history", help="list the schema revisions this release knows, oldest first",
        description="List the schema revisions (migrations) shipped with this collector, oldest first.",
    )
    history.set_defaults(run=_history)

    prune_parser = actions.add_parser(
        "prune", help="delete data older than its [retention] age now (serve does it every [retention] interval_seconds)",
        description="Delete, once, the rows older than their [retention] age: "
        + "; ".join(f"{rule.what} after {rule.key} (default {rule.default_days:g} days)" for rule in RULES)
        + ". The audit log, analysts' notes, acknowledgements and suppressions, enrolment history and "
        "the latest verdict of each device are kept (docs/privacy.md). `serve` runs the same job every "
        "[retention] interval_seconds.",
        epilog="Example: farmwatch-collector db prune --db /var/lib/farmwatch/farmwatch.db --config /etc/farmwatch/collector.toml",
    )
    db_flag(prune_parser)
    prune_parser.add_argument("--config", type=Path, metavar="FILE",
                              help="collector.toml whose [retention] ages apply (default: the documented defaults)")
    prune_parser.set_defaults(run=_prune)


def _shown(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _reason(failure: sa.exc.SQLAlchemyError) -> str:
    return str(getattr(failure, "orig", None) or failure).splitlines()[0]


def _engine_of_existing(value: str) -> sa.Engine:
    url = database_url(value)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise CommandError(f"no database at {url.removeprefix('sqlite:///')}")
    return open_engine(url)


def _upgrade(args: argparse.Namespace) -> int:
    url = database_url(args.db)
    engine = open_engine(url)
    try:
        done = migrate.upgrade(engine)
    except sa.exc.SQLAlchemyError as failure:
        raise StoreError(f"cannot upgrade database {_shown(url)}: {_reason(failure)}") from None
    finally:
        engine.dispose()
    if done.adopted:
        print(f"{_shown(url)}: made before migrations; recognised as revision {migrate.BASELINE} and upgraded to {done.after}")
    elif done.before == done.after:
        print(f"{_shown(url)}: already at revision {done.after} (current)")
    else:
        print(f"{_shown(url)}: upgraded from {done.before or 'an empty database'} to revision {done.after}")
    return 0


def _current(args: argparse.Namespace) -> int:
    engine = _engine_of_existing(args.db)
    try:
        found = migrate.current_revision(engine)
    except sa.exc.SQLAlchemyError as failure:
        raise StoreError(f"cannot read database {_shown(str(engine.url))}: {_reason(failure)}") from None
    finally:
        engine.dispose()
    needed = migrate.head()
    if found == needed:
        print(f"{found} (current: what this collector needs)")
        return 0
    print(f"{found or 'none (empty, or made before migrations)'} (this collector needs {needed}: run `farmwatch-collector db upgrade`)")
    return BEHIND_EXIT


def _history(_args: argparse.Namespace) -> int:
    for revision in migrate.history():
        print(f"{revision.revision}  {revision.doc.splitlines()[0] if revision.doc else ''}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    settings = load_retention_config(args.config)
    storage = open_existing(args.db)
    try:
        deleted = prune(storage.engine, settings, datetime.now(timezone.utc))
    finally:
        storage.close()
    for rule in RULES:
        print(f"{rule.key} = {settings.days[rule.key]:g}: deleted {deleted[rule.key]} {rule.what}")
    return 0
