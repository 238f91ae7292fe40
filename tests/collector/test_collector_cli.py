"""``farmwatch-collector`` commands run as real processes: export, roster/anchors import, revoke, serve errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from collector_helpers import auth, one_clear_line, report_for, serve_refusal, snapshot
from collector_process import RunningCollector

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "farmwatch.collector.cli"]
ROSTER_HEADER = "device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_export_sorts_by_received_at_and_filters_with_since(collector: RunningCollector, tmp_path: Path) -> None:
    first = collector.enrol(hardware_id="hw-1")
    second = collector.enrol(hardware_id="hw-2")
    sent = []
    for device, seq in ((second, 1), (first, 1), (second, 2)):
        answer = httpx.post(
            f"{collector.url}/api/v1/reports", json=report_for(str(device["device_id"]), seq), headers=auth(device["token"])
        )
        assert answer.status_code == 202
        sent.append((device["device_id"], seq))

    out = tmp_path / "records.jsonl"
    result = collector.cli("export", "--db", collector.db_url, "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["report"]["device_id"], r["report"]["seq"]) for r in records] == sent
    times = [r["received_at"] for r in records]
    assert times == sorted(times)

    since = collector.cli("export", "--db", collector.db_url, "--since", times[1])
    assert [json.loads(line)["received_at"] for line in since.stdout.splitlines()] == times[1:]


def test_export_errors_are_one_line(tmp_path: Path, collector: RunningCollector) -> None:
    assert "no database at" in one_clear_line(run("export", "--db", str(tmp_path / "absent.db")))
    assert "no time zone" in one_clear_line(run("export", "--db", collector.db_url, "--since", "2026-11-28T00:00:00"))
    assert "not an RFC 3339 time" in one_clear_line(run("export", "--db", collector.db_url, "--since", "yesterday"))
    message = one_clear_line(run("export", "--db", collector.db_url, "--out", str(tmp_path / "no" / "such" / "x.jsonl")))
    assert "does not exist" in message


def test_roster_import_replaces_and_a_bad_row_changes_nothing(collector: RunningCollector, tmp_path: Path) -> None:
    good = tmp_path / "roster.csv"
    good.write_text(ROSTER_HEADER + "lt-1,E-1,DE,Berlin,52.5,13.4,Europe/Berlin,rustdesk;anydesk\nlt-2,E-2,,,,,,\n")
    result = collector.cli("roster", "import", "--db", collector.db_url, str(good))
    assert (result.returncode, result.stdout.strip()) == (0, f"imported 2 roster rows from {good}")
    before = snapshot(collector.db_path)
    assert [row[0] for row in before["roster"]] == ["lt-1", "lt-2"]

    bad = tmp_path / "roster-bad.csv"
    bad.write_text(ROSTER_HEADER + "lt-3,E-3,US,Austin,30.3,-97.7,America/Chicago,\nlt-4,E-4,US,Austin,north,-97.7,,\n")
    message = one_clear_line(collector.cli("roster", "import", "--db", collector.db_url, str(bad)))
    assert f"{bad} line 3: latitude" in message
    assert snapshot(collector.db_path) == before


def test_anchors_import_and_a_bad_row(collector: RunningCollector, tmp_path: Path) -> None:
    good = tmp_path / "anchors.csv"
    good.write_text("name,address,port,latitude,longitude\nus-east,192.0.2.10,443,39.04,-77.49\n")
    assert collector.cli("anchors", "import", "--db", collector.db_url, str(good)).returncode == 0
    before = snapshot(collector.db_path)
    bad = tmp_path / "anchors-bad.csv"
    bad.write_text("name,address,port,latitude,longitude\nus-west,192.0.2.30,443,37.3\n")
    assert f"{bad} line 2: has 4 cells" in one_clear_line(collector.cli("anchors", "import", "--db", collector.db_url, str(bad)))
    assert "cannot be read" in one_clear_line(collector.cli("anchors", "import", "--db", collector.db_url, str(tmp_path / "nope.csv")))
    assert snapshot(collector.db_path) == before


def test_revoking_an_unknown_device(collector: RunningCollector) -> None:
    assert "no enrolled device 'dev-ghost'" in one_clear_line(collector.cli("devices", "revoke", "--db", collector.db_url, "dev-ghost"))


@pytest.mark.parametrize(
    ("config", "words"),
    [
        pytest.param("[collector]\nmax_report_byte = 10\n", "unknown key(s) max_report_byte", id="typo"),
        pytest.param("[collector\n", "is not valid TOML", id="broken-toml"),
        pytest.param("[geo]\ncorporate_networks = ['10.0.0.0/33']\n", "corporate_networks", id="bad-cidr"),
        pytest.param("[detection]\nreview_threshold = 'high'\n", "[detection]", id="bad-threshold"),
    ],
)
def test_serve_refuses_a_bad_config_in_one_line(tmp_path: Path, config: str, words: str) -> None:
    assert words in serve_refusal(tmp_path, config)


def test_serve_without_secrets_says_which_flag(tmp_path: Path) -> None:
    assert "--enroll-secret-file" in one_clear_line(run("serve", "--db", str(tmp_path / "x.db")))
    (tmp_path / "short").write_text("abc")
    message = one_clear_line(run("serve", "--db", str(tmp_path / "x.db"), "--enroll-secret-file", str(tmp_path / "short"),
                                 "--analyst-token-file", str(tmp_path / "short")))
    assert "shorter than 16 characters" in message


@pytest.mark.parametrize("command", [[], ["serve"], ["export"], ["roster", "import"], ["anchors", "import"], ["devices", "revoke"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: farmwatch-collector")
    assert len(result.stdout.splitlines()) > 5
