"""Helpers for the collector tests: a valid report for a device, and a snapshot of the whole store."""

from __future__ import annotations

import copy
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reports" / "report-linux-rustdesk.json"
TABLES = ("devices", "tokens", "enrolments", "reports", "roster", "anchors", "verdicts")


def report_for(device_id: str, seq: int = 1, **changes: Any) -> dict[str, Any]:
    """Our hand-written fixture report, re-addressed to ``device_id`` / ``seq`` with top-level changes."""
    report: dict[str, Any] = json.loads(FIXTURE.read_text())
    report.update(device_id=device_id, seq=seq, **copy.deepcopy(changes))
    return report


def snapshot(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read with the stdlib sqlite3 module (independent of our storage code)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr) for table in TABLES}


def auth(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def serve_refusal(folder: Path, config_text: str = "", *flags: str) -> str:
    """Run ``serve`` expecting it to refuse before listening; returns its one-line message.

    Checks the contract for expected failures: exit 1, one line on stderr, no traceback.
    """
    (folder / "secret").write_text("s" * 32)
    (folder / "refused.toml").write_text(config_text)
    done = subprocess.run(
        [sys.executable, "-m", "farmwatch.collector.cli", "serve", "--port", "0", "--db", str(folder / "refused.db"),
         "--config", str(folder / "refused.toml"), "--enroll-secret-file", str(folder / "secret"),
         "--analyst-token-file", str(folder / "secret"), *flags],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    return one_clear_line(done)


def one_clear_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failure message, after checking it is one line without a traceback and the exit is non-zero."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def wire_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def poison(collector: Any, device_id: str, seq: int) -> None:
    """Store a record the detectors cannot hold, as a collector without these bounds did: straight
    into the database, the way an old row would sit there."""
    report = report_for(device_id, seq, window_end="2262-04-12T00:00:00Z")
    received = datetime.now(timezone.utc)
    record = {"received_at": wire_time(received), "source_ip": "127.0.0.1",
              "geo": {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}, "report": report}
    with sqlite3.connect(collector.db_path) as db:
        db.execute("INSERT INTO reports (device_id, seq, digest, received_at, record) VALUES (?, ?, ?, ?, ?)",
                   (device_id, seq, "0" * 64, received.replace(tzinfo=None).isoformat(sep=" "), json.dumps(record)))
        report_id = db.execute("SELECT max(id) FROM reports").fetchone()[0]
        db.execute("UPDATE devices SET last_report_id = ?, last_seq = ?, last_seen = ? WHERE device_id = ?",
                   (report_id, seq, received.replace(tzinfo=None).isoformat(sep=" "), device_id))
