"""What alerting costs: the verdict transaction with the alert recorder, and how fast the outbox drains.

1. ``save_verdicts`` of one scoring run over 1000 devices on SQLite, without the alert recorder
   (the baseline) and with it: a first run (every device new), a run where 100 devices change to
   review (100 alerts, each queued for one output), and a run where nothing changes.
2. 1000 pending alerts drained by a delivery worker to a local HTTP receiver (tests/fixtures/
   siem_receivers.py), as a signed webhook (one POST per alert) and as ECS NDJSON (100 per POST),
   against the floor: the same 1000 webhook POSTs from a bare loop, with no database in between.
Receiver, worker and SQLite share this machine's cores.
"""

from __future__ import annotations

import http.client
import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import Figure, describe, publish, quick  # noqa: E402
from siem_receivers import HttpReceiver  # noqa: E402

from farmwatch.collector.delivery import Alerting  # noqa: E402
from farmwatch.collector.outputs import REGISTRY  # noqa: E402
from farmwatch.collector.outputs.base import parse_outputs  # noqa: E402
from farmwatch.collector.storage import Storage  # noqa: E402
from farmwatch.contract import Verdict  # noqa: E402

DEVICES = 100 if quick() else 1000
NOW = datetime(2026, 11, 28, 9, tzinfo=timezone.utc)


def verdicts(changed_every: int | None) -> list[Verdict]:
    """One run's verdicts: every ``changed_every``-th device at review, the rest clear."""
    def one(n: int) -> Verdict:
        label = "review" if changed_every and n % changed_every == 0 else "clear"
        return Verdict.model_validate_json(json.dumps({
            "device_id": f"dev-{n:05d}", "employee_id": None, "scored_at": NOW.isoformat(),
            "risk": 0.6 if label == "review" else 0.1, "verdict": label, "findings": []}))
    return [one(n) for n in range(DEVICES)]


def store_cost(folder: Path) -> list[Figure]:
    runs = [("first run", verdicts(None)), ("a tenth change", verdicts(10)), ("no change", verdicts(10))]
    figures = {}
    for recorder in (False, True):
        storage = Storage.open(f"sqlite:///{folder / f'store-{recorder}.db'}")
        if recorder:
            tables = [{"type": "ecs_file", "url": str(folder / "alerts.ndjson")}]
            Alerting(storage, parse_outputs(tables, REGISTRY, "bench"), None, CollectorRegistry(), lambda: NOW)
        for through, (name, scored) in enumerate(runs, start=1):
            started = time.perf_counter()
            storage.save_verdicts(scored, through)
            figures[(recorder, name)] = (time.perf_counter() - started) * 1000
        storage.close()
    return [Figure(f"save_verdicts with alerts, {DEVICES} devices, {name}", figures[(True, name)], "ms",
                   figures[(False, name)], "save_verdicts without the alert recorder") for name, _ in runs]


def drain(folder: Path, receiver: HttpReceiver) -> list[Figure]:
    secret = folder / "secret"
    secret.write_text("s" * 32)
    tables = [{"type": "webhook", "url": f"{receiver.url}/webhook", "secret_file": str(secret)},
              {"type": "ecs_http", "url": f"{receiver.url}/ecs"}]
    storage = Storage.open(f"sqlite:///{folder / 'drain.db'}")
    alerting = Alerting(storage, parse_outputs(tables, REGISTRY, "bench"), None, CollectorRegistry(), lambda: NOW)
    storage.save_verdicts(verdicts(1), through_report_id=1)  # every device raised: DEVICES alerts per output
    rates = {}
    for worker in alerting.workers:
        started = time.perf_counter()
        sent = 0
        while (step := worker.step()) > 0:
            sent += step
        rates[worker.output.name] = sent / (time.perf_counter() - started)
    storage.close()

    body = b'{"alert_id":"x"}'
    started = time.perf_counter()
    for _ in range(DEVICES):
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        connection.request("POST", "/floor", body=body, headers={"Content-Type": "application/json"})
        connection.getresponse().read()
        connection.close()
    floor = DEVICES / (time.perf_counter() - started)
    return [Figure(f"outbox drain, {name}", rate, "alerts/s", floor, "bare POSTs, no database, no signature")
            for name, rate in rates.items()]


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        figures = store_cost(Path(folder))
        receiver = HttpReceiver(hec_token="unused", webhook_secret="s" * 32).start()
        try:
            figures += drain(Path(folder), receiver)
        finally:
            receiver.stop()
    publish(figures)
    return 0


if __name__ == "__main__":
    describe(__doc__)
    raise SystemExit(main())
