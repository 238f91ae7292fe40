"""Migrations as an operator meets them: real collector processes, the real `db` commands, a real
PostgreSQL server. The previous release's schema is the generated dump in tests/fixtures/schema_a99bc29/."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from collector_helpers import one_clear_line, serve_refusal
from collector_process import DEFAULT_CONFIG, RunningCollector, free_port
from test_migrations import load_legacy, new_postgres_database, seed_legacy_rows

from farmwatch.collector import migrate


CHECK_CONFIG = DEFAULT_CONFIG + '\n[storage]\nmigrate = "check"\n'


def db_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "db", *args], capture_output=True, text=True,
                          timeout=120)


def revision_and_reports(url: str) -> tuple[str, int]:
    with psycopg.connect(url) as connection:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        reports = connection.execute("SELECT count(*) FROM reports").fetchone()
    assert revision is not None and reports is not None
    return str(revision[0]), int(reports[0])


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.parametrize("older", [False, True], ids=["empty", "previous-release"])
def test_replicas_started_together_all_come_up(postgres: str, tmp_path: Path, older: bool) -> None:
    """Four collectors (migrate = auto) started at once on one database: one migrates, all serve."""
    url = new_postgres_database(postgres, f"together_{'old' if older else 'empty'}")
    if older:
        load_legacy(url)
        seed_legacy_rows(url)
    replicas = [RunningCollector(workdir=tmp_path / f"replica-{n}", port=free_port(), config_text=DEFAULT_CONFIG,
                                 database=url) for n in range(4)]
    try:
        with ThreadPoolExecutor(len(replicas)) as pool:
            list(pool.map(lambda replica: replica.start(timeout=120), replicas))  # raises if any one exits
        assert all(replica.process is not None and replica.process.poll() is None for replica in replicas)
    finally:
        for replica in replicas:
            replica.stop()
    assert revision_and_reports(url) == (migrate.head(), 1 if older else 0)


@pytest.mark.slow
@pytest.mark.root
def test_a_replica_in_check_mode_waits_for_db_upgrade(postgres: str, tmp_path: Path) -> None:
    url = new_postgres_database(postgres, "check_mode")
    load_legacy(url)
    seed_legacy_rows(url)
    replica = RunningCollector(workdir=tmp_path / "replica", port=free_port(), config_text=CHECK_CONFIG, database=url)
    with pytest.raises(RuntimeError, match="collector exited with 1") as refused:
        replica.start(timeout=60)
    assert "needs revision" in str(refused.value) and "farmwatch-collector db upgrade --db URL" in str(refused.value)
    assert "Traceback" not in replica.log()
    behind = db_command("current", "--db", url)
    assert behind.returncode == 3 and "run `farmwatch-collector db upgrade`" in behind.stdout

    upgraded = db_command("upgrade", "--db", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"made before migrations; recognised as revision {migrate.BASELINE} and upgraded to {migrate.head()}" \
        in upgraded.stdout
    assert "already at revision" in db_command("upgrade", "--db", url).stdout
    assert db_command("current", "--db", url).returncode == 0
    replica.start(timeout=60)
    replica.stop()
    assert revision_and_reports(url) == (migrate.head(), 1)


@pytest.mark.slow
def test_check_mode_on_an_empty_sqlite_file_is_one_clear_line(tmp_path: Path) -> None:
    message = serve_refusal(tmp_path, "", "--migrate", "check")
    assert message.startswith("farmwatch-collector: the database is empty") and "db upgrade" in message


@pytest.mark.slow
@pytest.mark.root
def test_a_sql_ascii_database_is_refused_with_the_fix(postgres: str, tmp_path: Path) -> None:
    """SQL_ASCII stores bytes unchecked and psycopg hands its text back as bytes: refuse it, naming UTF8."""
    url = new_postgres_database(postgres, "ascii_only", encoding="SQL_ASCII")
    message = serve_refusal(tmp_path, "", "--db", url)
    assert "has encoding SQL_ASCII; farmwatch needs UTF8" in message and "ENCODING 'UTF8'" in message
    assert "SQL_ASCII; farmwatch needs UTF8" in one_clear_line(db_command("upgrade", "--db", url))
    with psycopg.connect(url) as connection:  # nothing was created in it
        assert connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


@pytest.mark.parametrize("args, expected", [
    pytest.param(("current", "--db", "postgresql://nobody@127.0.0.1:1/x"), "cannot read database", id="current-unreachable"),
    pytest.param(("upgrade", "--db", "postgresql://nobody:pw@127.0.0.1:1/x"), "cannot upgrade database postgresql://nobody:***@",
                 id="upgrade-unreachable-password-hidden"),
    pytest.param(("current", "--db", "/nonexistent/farmwatch.db"), "no database at /nonexistent/farmwatch.db", id="no-file"),
])
def test_db_commands_fail_in_one_line(args: tuple[str, ...], expected: str) -> None:
    assert expected in one_clear_line(db_command(*args))
