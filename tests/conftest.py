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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_process import DEFAULT_CONFIG, RunningCollector, launch_collector


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
