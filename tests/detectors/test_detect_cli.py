"""farmwatch-detect as operators run it: a real process over the example export (tests/fixtures/example_fleet)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import pytest

import farmwatch.entry
from farmwatch.contract import Verdict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "fixtures" / "example_fleet"
DETECT = Path(sys.executable).with_name("farmwatch-detect")


def _detect(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DETECT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_scores_the_example_export(tmp_path: Path) -> None:
    out = tmp_path / "verdicts.jsonl"
    done = _detect(EXAMPLES / "records.jsonl", "--roster", EXAMPLES / "roster.csv", "--anchors",
                   EXAMPLES / "anchors.csv", "--out", out, "--now", "2026-11-25T04:00:00Z")
    assert done.returncode == 0, done.stderr
    verdicts = {v.device_id: v for v in (Verdict.model_validate_json(line) for line in out.read_text().splitlines())}
    assert sorted(verdicts) == ["dev-3f9a1c22e0", "dev-81c07d5b12", "dev-c4410e9b77"]
    assert verdicts["dev-3f9a1c22e0"].verdict == "clear" and verdicts["dev-3f9a1c22e0"].findings == []
    abroad = verdicts["dev-81c07d5b12"]
    [remote] = [f for f in abroad.findings if f.detector == "remote_access"]
    assert "AnyDesk" in remote.summary and remote.evidence["tool"] == "anydesk" and remote.attack == "T1219"
    assert abroad.employee_id == "E20988" and abroad.verdict in {"review", "farm"}
    kvm = verdicts["dev-c4410e9b77"]
    assert [f.evidence["device"] for f in kvm.findings if f.detector == "ipkvm"] == ["PiKVM"]
    assert str(kvm.scored_at) == "2026-11-25 04:00:00+00:00"


def test_writes_json_lines_to_stdout() -> None:
    done = _detect(EXAMPLES / "records.jsonl", "--roster", EXAMPLES / "roster.csv")
    assert done.returncode == 0
    assert [json.loads(line)["device_id"] for line in done.stdout.splitlines()] == [
        "dev-3f9a1c22e0", "dev-81c07d5b12", "dev-c4410e9b77"]


@pytest.mark.parametrize(
    ("records", "roster", "message"),
    [
        pytest.param('{"report": {}}\n', None, "record 1: report.device_id", id="record-without-device"),
        pytest.param(None, "device_id,employee_id\n", "line 1", id="roster-header"),
        pytest.param("missing", None, "cannot be read", id="missing-records"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, records: str | None, roster: str | None, message: str) -> None:
    records_path = EXAMPLES / "records.jsonl"
    if records == "missing":
        records_path = tmp_path / "nope.jsonl"
    elif records is not None:
        records_path = tmp_path / "records.jsonl"
        records_path.write_text(records)
    roster_path = EXAMPLES / "roster.csv"
    if roster is not None:
        roster_path = tmp_path / "roster.csv"
        roster_path.write_text(roster)
    done = _detect(records_path, "--roster", roster_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "records.jsonl"
    good = (EXAMPLES / "records.jsonl").read_text().splitlines()[0]
    broken.write_text(good + "\n{not json\n")
    done = _detect(broken, "--roster", EXAMPLES / "roster.csv")
    assert done.returncode == 2 and f"{broken} line 2: not valid JSON" in done.stderr


def test_blank_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    """Blank and whitespace-only lines are skipped (the reader strips a line only when it fails to
    parse) and still count for the line number a broken line is named by."""
    lines = (EXAMPLES / "records.jsonl").read_text().splitlines()
    spaced = tmp_path / "records.jsonl"
    spaced.write_text("\n".join(["", lines[0], "   \t", *lines[1:], "", ""]) + "\n")
    plain = _detect(EXAMPLES / "records.jsonl", "--roster", EXAMPLES / "roster.csv", "--now", "2026-11-25T04:00:00Z")
    done = _detect(spaced, "--roster", EXAMPLES / "roster.csv", "--now", "2026-11-25T04:00:00Z")
    assert done.returncode == 0, done.stderr
    assert done.stdout == plain.stdout and done.stdout.count("\n") == 3
    spaced.write_text("\n\n" + lines[0] + "\n[1,\n")
    done = _detect(spaced, "--roster", EXAMPLES / "roster.csv")
    assert done.returncode == 2 and f"{spaced} line 4: not valid JSON" in done.stderr


def test_help_explains_the_command() -> None:
    done = _detect("--help")
    assert done.returncode == 0
    assert "--roster" in done.stdout and "one verdict per device" in done.stdout


@pytest.mark.parametrize(("now", "message"), [
    ("tomorrow", "not an RFC 3339 time"), ("2026-11-25T04:00:00", "has no time zone; add Z for UTC")])
def test_now_must_be_an_rfc3339_time(now: str, message: str) -> None:
    done = _detect(EXAMPLES / "records.jsonl", "--roster", EXAMPLES / "roster.csv", "--now", now)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_corporate_networks_are_not_colocation(tmp_path: Path) -> None:
    """Three employees behind the office egress are colleagues, once the office range is named."""
    from detector_records import make_record

    office_egress = {"source_ip": "198.51.100.20", "geo": {"network_kind": "residential"}}
    lines = [json.dumps(make_record(d, 60 * h, seq=h + 1, **office_egress)) for d in ("a", "b", "c") for h in range(6)]
    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(lines) + "\n")
    roster = tmp_path / "roster.csv"
    roster.write_text("device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools\n"
                      + "".join(f"{d},E{d},US,,,,America/Chicago,\n" for d in "abc"))
    office = _detect(records, "--roster", roster, "--corporate-network", "198.51.100.0/24")
    unknown = _detect(records, "--roster", roster)
    assert office.returncode == unknown.returncode == 0
    lines = (office.stdout + unknown.stdout).splitlines()
    detectors = [{f["detector"] for f in json.loads(line)["findings"]} for line in lines]
    assert detectors == [set(), set(), set(), {"colocation"}, {"colocation"}, {"colocation"}]
    bad = _detect(records, "--roster", roster, "--corporate-network", "office")
    assert bad.returncode == 2 and "--corporate-network" in bad.stderr


def test_the_console_script_freezes_the_heap_once_the_verdicts_are_written(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """farmwatch-detect's console script (farmwatch.entry.detect) freezes every object left once its
    work is done, so the interpreter's shutdown skips collecting them; run here in this process
    with the freeze recorded instead of done (a frozen test process would never collect again)."""
    out = tmp_path / "verdicts.jsonl"
    frozen_after: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen_after.append(out.exists()))
    monkeypatch.setattr(sys, "argv", ["farmwatch-detect", str(EXAMPLES / "records.jsonl"), "--roster",
                                      str(EXAMPLES / "roster.csv"), "--out", str(out), "--workers", "1"])
    assert farmwatch.entry.detect() == 0
    assert frozen_after == [True]
