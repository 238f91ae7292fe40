"""Issue 15, collector side of the identity lifecycle, against real collector processes: purging a
device's poisoned data (audited), enrol secret rotation with an overlap, per-device token rotation."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_helpers import auth, one_clear_line, poison, report_for, serve_refusal, snapshot, wire_time
from collector_process import DEFAULT_CONFIG, RunningCollector

pytestmark = pytest.mark.slow


def post(collector: RunningCollector, token: object, report: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{collector.url}/api/v1/reports", content=json.dumps(report).encode(),
                      headers={**auth(token), "Content-Type": "application/json"}, timeout=30)


def recent(device_id: str, seq: int) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return report_for(device_id, seq, window_start=wire_time(now - timedelta(minutes=5)), window_end=wire_time(now))


def test_purge_removes_a_poisoned_device_s_data_and_verdict_audited(collector: RunningCollector) -> None:
    device, neighbour = collector.enrol(), collector.enrol(hardware_id="hw-neighbour")
    device_id = str(device["device_id"])
    assert post(collector, device["token"], recent(device_id, 1)).status_code == 202
    assert post(collector, neighbour["token"], recent(str(neighbour["device_id"]), 1)).status_code == 202
    poison(collector, device_id, 9_007_199_254_740_991)  # a stored window_end of 2262 at the largest seq
    listed = httpx.get(f"{collector.url}/api/v1/devices", headers=auth(collector.analyst_token), timeout=300).json()
    assert {row["device_id"]: row["verdict"] for row in listed}[device_id] == "review"

    done = collector.cli("devices", "purge", "--db", collector.db_url, device_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"purged 2 report(s) of {device_id} (0 left; verdict removed); audited as cli:")
    tables = snapshot(collector.db_path)
    assert [row for row in tables["reports"] if row[1] == device_id] == []
    assert [row[0] for row in tables["verdicts"]] == [str(neighbour["device_id"])]
    with sqlite3.connect(collector.db_path) as db:
        (last_seq,) = db.execute("SELECT last_seq FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        audit = db.execute("SELECT analyst, action, device_id, detail FROM audit_log").fetchall()
    assert last_seq is None
    [(actor, action, audited_device, detail)] = audit
    assert (action, audited_device) == ("purge", device_id) and actor.startswith("cli:")
    assert "removed 2 of the device's all reports" in detail

    again = collector.enrol()  # the poisoned seq no longer blocks the device: it starts over
    assert again["device_id"] == device_id and again["next_seq"] == 1
    assert post(collector, again["token"], recent(device_id, 1)).status_code == 202
    shown = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=auth(collector.analyst_token)).json()
    assert all(f["detector"] != "scoring_error" for f in shown["findings"])


def test_purge_before_a_time_keeps_later_reports(collector: RunningCollector) -> None:
    device = collector.enrol()
    device_id = str(device["device_id"])
    assert post(collector, device["token"], recent(device_id, 1)).status_code == 202
    with sqlite3.connect(collector.db_path) as db:  # make seq 1 a day old
        db.execute("UPDATE reports SET received_at = datetime(received_at, '-1 day') WHERE seq = 1")
    assert post(collector, device["token"], recent(device_id, 2)).status_code == 202
    cutoff = wire_time(datetime.now(timezone.utc) - timedelta(hours=1))
    done = collector.cli("devices", "purge", "--db", collector.db_url, device_id, "--before", cutoff)
    assert done.returncode == 0, done.stderr
    assert "purged 1 report(s)" in done.stdout and "(1 left;" in done.stdout
    assert [row[2] for row in snapshot(collector.db_path)["reports"]] == [2]
    with sqlite3.connect(collector.db_path) as db:
        assert db.execute("SELECT last_seq FROM devices").fetchone() == (2,)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["dev-nobody"], "no enrolled device 'dev-nobody'", id="unknown-device"),
        pytest.param(["dev-x", "--before", "yesterday"], "--before 'yesterday' is not an RFC 3339 time", id="bad-time"),
    ],
)
def test_purge_refuses_in_one_line(collector: RunningCollector, args: list[str], expected: str) -> None:
    assert expected in one_clear_line(collector.cli("devices", "purge", "--db", collector.db_url, *args))


def enrol_with(collector: RunningCollector, secret: str) -> int:
    return httpx.post(f"{collector.url}/api/v1/enroll",
                      json={"enroll_secret": secret, "hostname": "h", "hardware_id": "hw-rotation"}, timeout=30).status_code


@pytest.mark.parametrize(("hours", "old_accepted"), [pytest.param(1, True, id="inside-overlap"),
                                                      pytest.param(-1, False, id="after-overlap")])
def test_the_previous_enrol_secret_is_accepted_until_its_overlap_ends(
    collector_factory: Any, tmp_path: Path, hours: int, old_accepted: bool
) -> None:
    old_secret = "old-secret-" + "o" * 24
    (tmp_path / "old-secret").write_text(old_secret + "\n")
    until = wire_time(datetime.now(timezone.utc) + timedelta(hours=hours))
    config = DEFAULT_CONFIG.replace("[collector]\n", f'[collector]\nprevious_enroll_secret_file = "{tmp_path / "old-secret"}"\n'
                                    f'previous_enroll_secret_until = "{until}"\n')
    collector = collector_factory(config)
    assert enrol_with(collector, collector.enroll_secret) == 200
    assert enrol_with(collector, old_secret) == (200 if old_accepted else 401)
    assert enrol_with(collector, "neither-" + "x" * 20) == 401


def test_a_half_configured_rotation_stops_serve(tmp_path: Path) -> None:
    line = serve_refusal(tmp_path, '[collector]\nprevious_enroll_secret_until = "2026-12-31T00:00:00Z"\n')
    assert "previous_enroll_secret_file and previous_enroll_secret_until go together" in line
    (tmp_path / "old").write_text("o" * 32)
    line = serve_refusal(tmp_path, f'[collector]\nprevious_enroll_secret_file = "{tmp_path / "old"}"\n'
                                   'previous_enroll_secret_until = "next week"\n')
    assert "previous_enroll_secret_until: must be an RFC 3339 time" in line


def test_a_device_rotates_its_own_token(collector: RunningCollector) -> None:
    device = collector.enrol()
    device_id, old = str(device["device_id"]), device["token"]
    rotated = httpx.post(f"{collector.url}/api/v1/token", headers=auth(old))
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["device_id"] == device_id and rotated.json()["token"] != old
    assert post(collector, old, report_for(device_id, 1)).status_code == 401
    assert post(collector, rotated.json()["token"], report_for(device_id, 1)).status_code == 202
    assert httpx.post(f"{collector.url}/api/v1/token", headers=auth(old)).status_code == 401
    stored = b"".join(p.read_bytes() for p in collector.db_path.parent.glob("farmwatch.db*"))
    assert rotated.json()["token"].encode() not in stored
