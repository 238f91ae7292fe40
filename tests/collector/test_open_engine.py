"""open_engine: a pre-ping only where a server may have dropped the connection, and a SQLite too old for
the group commit's statements refused with its version (no engine connects here)."""

from __future__ import annotations

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
