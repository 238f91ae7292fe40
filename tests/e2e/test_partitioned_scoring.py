"""Two collectors on one PostgreSQL share the scoring by device, with no leased scorer (issue 12).

Real collector processes, a real throwaway PostgreSQL (root only), a real webhook receiver; the
reports are our hand-written fixture (a far AnyDesk session and a PiKVM: farm at once), each laptop
on a network of its own (its own loopback source address, gateway and Wi-Fi hashes), so one laptop's
report never changes another's co-location neighbourhood. Every round each laptop sends one new
report to one replica and the same report again to the other. Counted from
the replicas' ``farmwatch_scoring_devices_total`` and from the database, not from logs: each laptop
is scored once per round by one of the two, both replicas take a share, every report is stored
once, and each laptop has one verdict change and one alert.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alert_scenario import ROSTER_HEADER, auth, collector_config, report
from collector_process import RunningCollector
from postgres_server import new_database
from siem_receivers import HttpReceiver, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

LAPTOPS = 12
ROUNDS = 3
INTERVAL = 4.0
BATCH = 2  # smaller than the fleet, so both replicas get claims in every interval
KILL_ROUNDS = 4  # rounds in which a scoring child is watched for a claim to be killed holding it


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[tuple[HttpReceiver, str]]:
    secret = secrets.token_hex(32)
    (tmp_path / "webhook-secret").write_text(secret)
    receiver = HttpReceiver(hec_token="unused", webhook_secret=secret).start()
    table = (f'\n[[outputs]]\nname = "soar"\ntype = "webhook"\nurl = "{receiver.url}/webhook"\n'
             f'secret_file = "{tmp_path / "webhook-secret"}"\nretry_max_seconds = 1\n')
    try:
        yield receiver, table
    finally:
        receiver.release.set()
        receiver.stop()


def scored_devices(collector: RunningCollector) -> float:
    text = httpx.get(f"{collector.url}/metrics", timeout=30).text
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith("farmwatch_scoring_devices_total ")]
    return float(value)


def send(collector: RunningCollector, laptop: int, body: dict[str, object], token: object) -> None:
    """Post ``body`` from laptop ``laptop``'s own loopback address, on its own LAN identities."""
    body["network"] = {**body["network"], "gateway_mac_hash": f"{laptop:064x}", "wifi_bssid_hash": f"{laptop + 99:064x}"}
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{laptop + 2}")
    with httpx.Client(transport=transport, timeout=60) as client:
        sent = client.post(f"{collector.url}/api/v1/reports", json=body, headers=auth(token))
    assert sent.status_code == 202, sent.text


def after_next_tick() -> None:
    """Sleep until just after the next multiple of INTERVAL, when both replicas have just ticked."""
    time.sleep(INTERVAL - time.time() % INTERVAL + 0.3)


def test_two_collectors_share_scoring_each_laptop_once_per_interval(
    postgres: str, webhook: tuple[HttpReceiver, str], collector_factory: Callable[..., RunningCollector],
    tmp_path: Path,
) -> None:
    receiver, table = webhook
    config = collector_config(table).replace(
        "interval_seconds = 3600", f"interval_seconds = {INTERVAL}\nbatch_devices = {BATCH}")
    replicas = [collector_factory(config, name=f"replica-{n}", database=postgres) for n in (1, 2)]
    laptops = [replicas[n % 2].enrol(hardware_id=f"hw-share-{n}", hostname=f"tp-{n}") for n in range(LAPTOPS)]
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER_HEADER + "".join(
        f"{laptop['device_id']},E-{n},US,Austin,30.27,-97.74,America/Chicago,\n" for n, laptop in enumerate(laptops)))
    assert replicas[0].cli("roster", "import", "--db", postgres, str(roster)).returncode == 0

    for seq in range(1, ROUNDS + 1):
        after_next_tick()  # the round's reports all land inside one interval
        for n, laptop in enumerate(laptops):
            body = report(str(laptop["device_id"]), seq)
            send(replicas[(n + seq) % 2], n, body, laptop["token"])
            send(replicas[(n + seq + 1) % 2], n, body, laptop["token"])  # the same report again: a resend
        wait_for(lambda: sum(map(scored_devices, replicas)) >= LAPTOPS * seq, 60, f"round {seq} scored")
    time.sleep(2 * INTERVAL)  # two more ticks: nothing is left to score, so nobody scores again

    shares = [scored_devices(replica) for replica in replicas]
    assert sum(shares) == LAPTOPS * ROUNDS, shares
    assert min(shares) > 0, f"one replica scored everything: {shares}"

    ids = sorted(str(laptop["device_id"]) for laptop in laptops)
    engine = sa.create_engine(postgres.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as db:
            stored = db.execute(sa.text("SELECT device_id, seq, count(*) FROM reports GROUP BY device_id, seq")).all()
            changes: dict[str, int] = dict(db.execute(sa.text("SELECT device_id, changes FROM verdict_state")).all())
            labels = set(db.execute(sa.text("SELECT verdict FROM verdict_state")).scalars())
            alerts = db.execute(sa.text("SELECT device_id, count(*) FROM alerts GROUP BY device_id")).all()
            backlog = db.execute(sa.text("SELECT count(*) FROM scoring_work")).scalar_one()
    finally:
        engine.dispose()
    assert sorted(stored) == [(device, seq, 1) for device in ids for seq in range(1, ROUNDS + 1)]
    assert changes == {device: 1 for device in ids} and labels == {"farm"}
    assert sorted(alerts) == [(device, 1) for device in ids]
    assert backlog == 0

    wait_for(lambda: len(receiver.accepted("/webhook")) >= LAPTOPS, 60, "every laptop's alert delivered")
    documents = receiver.documents("/webhook")
    assert sorted(doc["device_id"] for doc in documents) == ids
    assert {(doc["previous_verdict"], doc["verdict"]) for doc in documents} == {("clear", "farm")}
    rows = httpx.get(f"{replicas[1].url}/api/v1/devices", headers=auth(replicas[1].analyst_token), timeout=60).json()
    assert {(row["verdict"], row["stale"]) for row in rows} == {("farm", False)}


def scoring_children(collector: RunningCollector) -> dict[int, int]:
    """The newest pid of each scoring child process, as each logged it on starting."""
    started = re.findall(r"scoring process (\d+) started \(pid (\d+)\)", collector.log())
    return {int(index): int(pid) for index, pid in started}


def claimed_by(engine: sa.Engine, pid: int, until: float) -> list[str]:
    """The devices the scorer of process ``pid`` holds claimed (its holder name carries the pid), as
    soon as it holds any before ``until`` (monotonic); [] if it held none by then."""
    while time.monotonic() < until:
        with engine.connect() as db:
            held = list(db.execute(sa.text("SELECT device_id FROM scoring_work WHERE claimed_by LIKE :mine"),
                                   {"mine": f"%:{pid}:%"}).scalars())
        if held:
            return held
        time.sleep(0.02)
    return []


def metric(collector: RunningCollector, name: str) -> float:
    text = httpx.get(f"{collector.url}/metrics", timeout=30).text
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(value)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_scoring_processes_of_one_collector_share_scoring_and_survive_a_killed_one(
    backend: str, webhook: tuple[HttpReceiver, str], collector_factory: Callable[..., RunningCollector],
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """``[detection] scoring_processes = 2``: one serve, two scoring children. Each laptop is scored
    once per interval by one of them and both take a share; a child killed (SIGKILL) while it holds
    claimed devices is started again, and those devices' claims lapse and are retaken, so every
    laptop's verdict still covers its newest report; each laptop has one verdict change, one alert
    and every report stored once."""
    # its own database: the module's cluster still holds the laptops of the test above, which this
    # collector would score too (stale verdicts), on top of its own
    database = new_database(request.getfixturevalue("postgres"), "scoring_processes") if backend == "postgresql" else None
    receiver, table = webhook
    config = collector_config(table).replace(
        "interval_seconds = 3600", f"interval_seconds = {INTERVAL}\nbatch_devices = {BATCH}\nscoring_processes = 2")
    collector = collector_factory(config, name=f"processes-{backend}", database=database)
    wait_for(lambda: set(scoring_children(collector)) == {1, 2}, 60, "both scoring processes started")
    laptops = [collector.enrol(hardware_id=f"hw-proc-{backend}-{n}", hostname=f"tp-{n}") for n in range(LAPTOPS)]
    ids = sorted(str(laptop["device_id"]) for laptop in laptops)
    roster = tmp_path / "roster.csv"
    roster.write_text(ROSTER_HEADER + "".join(
        f"{laptop['device_id']},E-{n},US,Austin,30.27,-97.74,America/Chicago,\n" for n, laptop in enumerate(laptops)))
    assert collector.cli("roster", "import", "--db", collector.db_url, str(roster)).returncode == 0

    for seq in (1, 2):
        after_next_tick()
        for n, laptop in enumerate(laptops):
            send(collector, n, report(str(laptop["device_id"]), seq), laptop["token"])
        wait_for(lambda: scored_devices(collector) >= LAPTOPS * seq, 60, f"round {seq} scored")
    time.sleep(2 * INTERVAL)  # two more ticks: nothing is left to score, so nobody scores again
    assert scored_devices(collector) == LAPTOPS * 2
    shares = [metric(collector, f'farmwatch_scoring_process_devices_total{{process="{n}"}}') for n in (1, 2)]
    assert sum(shares) == LAPTOPS * 2 and min(shares) > 0, shares

    engine = sa.create_engine(collector.db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        killed = scoring_children(collector)[1]
        held: list[str] = []
        seq = 2
        while not held and seq < 2 + KILL_ROUNDS:  # until child 1 is caught holding a claim
            seq += 1
            after_next_tick()
            for n, laptop in enumerate(laptops):
                send(collector, n, report(str(laptop["device_id"]), seq), laptop["token"])
            held = claimed_by(engine, killed, time.monotonic() + 1.5 * INTERVAL)
        assert held, f"child 1 was never seen holding a claim in {KILL_ROUNDS} rounds"
        os.kill(killed, signal.SIGKILL)  # its claimed devices are neither scored nor released
        wait_for(lambda: scoring_children(collector).get(1, killed) != killed, 60, "the killed child started again")
        assert metric(collector, "farmwatch_scoring_restarts_total") == 1

        def all_scored() -> bool:
            with engine.connect() as db:
                behind = set(db.execute(sa.text(
                    "SELECT devices.device_id FROM devices LEFT JOIN verdicts USING (device_id) WHERE "
                    "verdicts.device_id IS NULL OR verdicts.through_report_id < devices.last_report_id")).scalars())
                marked = set(db.execute(sa.text("SELECT device_id FROM scoring_work")).scalars())
                return not (behind | marked) & set(ids)
        # The dead child's claims lapse (after 60 s) and another scorer takes them.
        wait_for(all_scored, 150, f"every laptop's verdict covers round {seq}, the dead child's claims {held} too")
        with engine.connect() as db:
            stored = db.execute(sa.text("SELECT device_id, seq, count(*) FROM reports GROUP BY device_id, seq")).all()
            changes: dict[str, int] = dict(db.execute(sa.text("SELECT device_id, changes FROM verdict_state")).all())
            alerts = db.execute(sa.text("SELECT device_id, count(*) FROM alerts GROUP BY device_id")).all()
    finally:
        engine.dispose()
    # The module's PostgreSQL holds the other test's laptops too: only these are looked at.
    assert sorted(row for row in stored if row[0] in ids) == [(device, number, 1) for device in ids for number in range(1, seq + 1)]
    assert {device: count for device, count in changes.items() if device in ids} == {device: 1 for device in ids}
    assert sorted(row for row in alerts if row[0] in ids) == [(device, 1) for device in ids]
    wait_for(lambda: len(receiver.accepted("/webhook")) >= LAPTOPS, 60, "every laptop's alert delivered")
    assert sorted(doc["device_id"] for doc in receiver.documents("/webhook")) == ids
