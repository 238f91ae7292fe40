"""What every ``farmwatch-collector`` subcommand module shares: the ``--db`` flag, opening an existing
database, ``--since`` times and the one-line error.

``collector/cli.py`` builds the parser from the subcommand modules (alert_commands, db_commands,
console/cli); they import these helpers from here rather than from cli.py, so no module imports the
one that imports it.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from farmwatch.collector.storage import Storage
from farmwatch.errors import FarmwatchError
from farmwatch.times import parse_utc

DEFAULT_DB = "sqlite:///farmwatch.db"


class CommandError(FarmwatchError):
    """An expected failure; its message is the one line the user sees."""


def db_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--db URL`` (default :data:`DEFAULT_DB`) to a subcommand."""
    parser.add_argument("--db", default=DEFAULT_DB, metavar="URL",
                        help=f"database URL or SQLite file path (default: {DEFAULT_DB})")


def database_url(value: str) -> str:
    """A SQLAlchemy URL from ``--db``: URLs pass through, a bare path means a SQLite file."""
    return value if "://" in value else f"sqlite:///{value}"


def open_existing(value: str) -> Storage:
    """The store at ``--db``; a SQLite file that does not exist yet is a CommandError, not a new file."""
    url = database_url(value)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise CommandError(f"no database at {url.removeprefix('sqlite:///')} (start `serve` with this --db first)")
    return Storage.open(url)


def parse_since(text: str) -> datetime:
    """``--since TIME`` as an aware UTC datetime; a bad time is a CommandError naming the flag."""
    try:
        return parse_utc(text)
    except ValueError as problem:
        raise CommandError(f"--since {problem}") from None
