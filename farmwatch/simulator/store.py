"""Put simulated ingest records straight into a collector store (benchmarks and tests of scoring).

Reports go in as ingest would leave them (one ``reports`` row per record, its device enrolled), in
bulk and without HTTP: what scoring reads is the same, and a fleet's days load in seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from farmwatch.collector.storage import Storage
from farmwatch.collector.tables import devices, reports

BULK = 2000


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def load_records(storage: Storage, records: Iterable[dict[str, Any]]) -> int:
    """Store ``records`` (simulator output: ``received_at`` and ``report`` set), enrolling each new
    device (hardware id = device id); returns how many were stored. A record whose device and seq
    are already stored is left out, as ingest refuses it (a restarted sequence)."""
    with storage.engine.connect() as connection:
        known = set(connection.execute(devices.select().with_only_columns(devices.c.device_id)).scalars())
        taken = {tuple(row) for row in connection.execute(reports.select().with_only_columns(reports.c.device_id, reports.c.seq))}
    rows: list[dict[str, Any]] = []
    stored = 0
    for record in records:
        device, received = record["report"]["device_id"], _time(record["received_at"])
        if (device, record["report"]["seq"]) in taken:
            continue
        taken.add((device, record["report"]["seq"]))
        if device not in known:
            _flush(storage, rows)
            stored += len(rows)
            rows = []
            with storage._writer.begin() as tx:
                tx.execute(devices.insert().values(device_id=device, hardware_id=device, hostname=device,
                                                   enrolled_at=received))
            known.add(device)
        text = orjson.dumps(record)
        rows.append({"device_id": device, "seq": record["report"]["seq"], "received_at": received,
                     "digest": hashlib.sha256(text).hexdigest(), "record": text.decode()})
        if len(rows) >= BULK:
            _flush(storage, rows)
            stored += len(rows)
            rows = []
    _flush(storage, rows)
    return stored + len(rows)


def _flush(storage: Storage, rows: list[dict[str, Any]]) -> None:
    if rows:
        with storage._writer.begin() as tx:
            tx.execute(reports.insert(), rows)
