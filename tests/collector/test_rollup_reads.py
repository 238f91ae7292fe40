"""The reducer reads the rollup rows it merges into by their primary key, not by a scan of the table
(``rollups._read_rollups``: at 20,000 laptops a scan per 400 keys took 1.5 s, which made an
interval's reduction grow with the square of the fleet).

A simulated fleet (farmwatch.simulator) is stored in a real collector store (SQLite file) and
reduced by the collector's reducer; the statement's plan is SQLite's own (``EXPLAIN QUERY PLAN``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from farmwatch.collector.rollups import _read_rollups, catch_up
from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import rollups
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.store import load_records


def test_the_rollups_a_batch_merges_into_are_read_by_primary_key_and_only_those(tmp_path: Path) -> None:
    files = write_fleet(tmp_path, seed=29, legit=6, farms=2, days=1)
    records = [orjson.loads(line) for line in files.records.open("rb")]
    storage = Storage.open(f"sqlite:///{tmp_path / 'collector.db'}")
    try:
        load_records(storage, records)
        last = max(datetime.fromisoformat(r["received_at"].replace("Z", "+00:00")) for r in records)
        catch_up(storage, last + timedelta(minutes=1))
        with storage.engine.connect() as connection:
            stored = sorted((row.device_id, row.hour) for row in connection.execute(sa.select(rollups.c.device_id, rollups.c.hour)))
            device = stored[0][0]
            hours = [hour for d, hour in stored if d == device]
            assert len(hours) >= 3
            # Its first and last hours, another device's first hour, and a key with no rollup: the
            # hours in between fall in the range asked for and must not come back.
            other = next(key for key in stored if key[0] != device)
            wanted = [(device, hours[0]), (device, hours[-1]), other, ("no-such-device", hours[0])]
            statements: list[tuple[str, Any]] = []

            def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
                statements.append((statement, parameters))

            sa.event.listen(storage.engine, "before_cursor_execute", seen)
            try:
                found = _read_rollups(connection, sorted(wanted))
            finally:
                sa.event.remove(storage.engine, "before_cursor_execute", seen)
            assert sorted(found) == sorted(wanted[:3])
            assert all(found[key].windows for key in found)
            [(statement, parameters)] = [s for s in statements if "FROM rollups" in s[0]]
            plan = " ".join(row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
        assert "SCAN rollups" not in plan and "SEARCH rollups USING INDEX" in plan, plan
    finally:
        storage.close()
