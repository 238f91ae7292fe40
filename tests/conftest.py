"""Fixtures shared by every test folder.

``collector``: a real ``farmwatch-collector serve`` process on a free loopback port, over a fresh
SQLite database in the test's tmp folder, with a generated enrol secret and analyst token. It yields
a :class:`collector_process.RunningCollector` (``.url``, ``.db_path``, ``.db_url``,
``.enroll_secret_file``, ``.enroll_secret``, ``.analyst_token``, ``.analyst_token_file``,
``.config_file``, ``.log()``, ``.enrol()``, ``.cli(...)``, ``.stop()``, ``.start()`` to restart on
the same port and database) and always stops the process afterwards, even when the test fails.

``collector_factory``: a callable ``(config_text=DEFAULT_CONFIG, name="collector", database=None)`` for
tests that need their own TOML settings, another database URL (e.g. PostgreSQL) or several
collectors; every collector it started is stopped at the end.

``postgres``: the URL of a throwaway PostgreSQL cluster (``postgres_server.PostgresServer``), one per
test module; skipped with the reason where PostgreSQL's binaries or root are missing.

``small_disk``: a real 4 MiB tmpfs to fill (``tiny_disk.tiny_tmpfs``); skipped when not root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_process import DEFAULT_CONFIG, RunningCollector, free_port, launch_collector
from postgres_server import PostgresServer, unavailable
from tiny_disk import tiny_tmpfs


@pytest.fixture
def collector_factory(tmp_path: Path) -> Iterator[Callable[..., RunningCollector]]:
    started: list[RunningCollector] = []

    def start(config_text: str = DEFAULT_CONFIG, name: str = "collector", database: str | None = None) -> RunningCollector:
        running = launch_collector(tmp_path / name, config_text, database=database)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()


@pytest.fixture
def collector(collector_factory: Callable[..., RunningCollector]) -> RunningCollector:
    return collector_factory()


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = PostgresServer(free_port())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_tmpfs(tmp_path / "small", size="4m") as mount:
        yield mount
