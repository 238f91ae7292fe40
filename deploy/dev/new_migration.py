"""Write a new Alembic revision for what you changed in farmwatch/collector/tables.py (developers).

Upgrades a throwaway SQLite database to the current head, lets Alembic's autogenerate compare it
with ``tables.metadata`` and writes ``farmwatch/collector/migrations/versions/NNNN_<message>.py``
(NNNN: the head's number + 1). Read and tidy what it wrote (see the README in that folder).

    .venv/bin/python deploy/dev/new_migration.py "rollups: hourly device rollups and sightings"
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command

from farmwatch.collector import migrate
from farmwatch.collector.storage import open_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("message", help='what the revision does, e.g. "rollups: hourly device rollups"')
    args = parser.parse_args()
    number = f"{int(migrate.head()) + 1:04d}"
    with tempfile.TemporaryDirectory() as folder:
        engine = open_engine(f"sqlite:///{Path(folder) / 'head.db'}")
        migrate.upgrade(engine)
        with engine.connect() as connection:
            config = migrate.alembic_config(connection)
            command.revision(config, message=args.message, autogenerate=True, rev_id=number)
        engine.dispose()


if __name__ == "__main__":
    main()
