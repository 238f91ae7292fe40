"""open_engine: a pre-ping only where a server may have dropped the connection, a SQLite too old for
the group commit's statements refused with its version, and connections opening a new SQLite file
at the same moment all get it in WAL mode."""

from __future__ import annotations

import threading
from sqlite3 import dbapi2
from pathlib import Path

import pytest

from farmwatch.collector.storage import OLDEST_SQLITE, StoreError, open_engine


def test_only_a_server_database_is_pinged_at_checkout(tmp_path: Path) -> None:
    assert open_engine(f"sqlite:///{tmp_path / 'file.db'}").pool._pre_ping is False
    assert open_engine("postgresql://farmwatch@localhost/farmwatch").pool._pre_ping is True


def test_a_sqlite_older_than_the_group_commit_needs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dbapi2, "sqlite_version_info", (3, 32, 3))  # the module SQLAlchemy's pysqlite loads
    with pytest.raises(StoreError, match=r"SQLite 3\.32\.3 is too old: farmwatch needs 3\.33\.0"):
        open_engine(f"sqlite:///{tmp_path / 'file.db'}")
    monkeypatch.setattr(dbapi2, "sqlite_version_info", OLDEST_SQLITE)
    open_engine(f"sqlite:///{tmp_path / 'file.db'}").dispose()


def test_connections_opening_a_new_file_at_the_same_moment_all_open_it(tmp_path: Path) -> None:
    """Converting a rollback-journal file to WAL at the same moment, SQLite tells all but one
    connection "locked" at once, without its busy timeout (about one open in ninety failed so here):
    each open must still succeed, in WAL mode."""
    failures: list[BaseException] = []
    modes: list[str] = []
    for attempt in range(100):
        url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        start = threading.Barrier(6)

        def open_at_once() -> None:
            engine = open_engine(url)
            start.wait()
            try:
                with engine.connect() as connection:
                    modes.append(connection.exec_driver_sql("PRAGMA journal_mode").scalar_one())
            except BaseException as failure:  # noqa: BLE001 - collected, asserted below
                failures.append(failure)
            finally:
                engine.dispose()

        threads = [threading.Thread(target=open_at_once) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert modes == ["wal"] * 600
