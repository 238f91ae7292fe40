"""farmwatch-detect --workers: the records file cut into parts, each read and reduced in its own
process, gives the frames, verdicts and refusals of one process reading it whole, though a
device's records lie in several parts (the simulated fleet's records interleaved as they arrive);
the detectors shared among forked processes give the verdicts of one."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from farmwatch.contract import to_wire
from farmwatch.detectors import pipeline
from farmwatch.detectors.base import DeviceFinding
from farmwatch.detectors.frame import Frames, flatten, read_records
from farmwatch.detectors import shards
from farmwatch.detectors.shards import MIN_PART_BYTES, FileReading, part_bounds
from farmwatch.roster import load_anchors, load_roster
from farmwatch.simulator.cli import FleetFiles, write_fleet

DETECT = Path(sys.executable).with_name("farmwatch-detect")
NOW = "2026-11-04T00:00:00Z"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> FleetFiles:
    """A simulated fleet (a hardware-changing tactic included), its records in order of receipt:
    every device's records spread over the whole file."""
    files = write_fleet(tmp_path_factory.mktemp("fleet"), seed=2, legit=8, farms=3, days=2, tactics=("kvm-reflashed",))
    lines = files.records.read_bytes().splitlines()
    lines.sort(key=lambda line: orjson.loads(line)["received_at"])
    files.records.write_bytes(b"\n".join(lines) + b"\n")
    assert files.records.stat().st_size >= 3 * MIN_PART_BYTES  # cut into three parts below
    return files


def _devices(path: Path, start: int, end: int | None) -> set[str]:
    return {record.report.device_id for record in read_records(path, start, end)}


def _detect(files: FleetFiles, records: Path, workers: int) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(DETECT), str(records), "--roster", str(files.roster), "--anchors", str(files.anchors),
                           "--now", NOW, "--workers", str(workers)], capture_output=True, timeout=300)


def test_parts_cut_anywhere_hold_every_line_once(tmp_path: Path) -> None:
    """Cut at every byte offset (inside a line, on its newline, on blank lines, before a last line
    without one), the parts' records are the file's, in order."""
    lines = [orjson.dumps({"report": {"device_id": f"d{n}", "window_end": "2026-11-01T00:00:00Z"}}) for n in range(5)]
    path = tmp_path / "records.jsonl"
    path.write_bytes(lines[0] + b"\n\n" + lines[1] + b"\n  \n" + b"\n".join(lines[2:]))
    whole = [record.report.device_id for record in read_records(path)]
    assert whole == [f"d{n}" for n in range(5)]
    size = path.stat().st_size
    for cut in range(size + 1):
        for second in (cut, cut + 7, size):
            parts = [read_records(path, 0, cut), read_records(path, cut, second), read_records(path, second)]
            assert [record.report.device_id for part in parts for record in part] == whole, (cut, second)


def assert_read_in_parts_as_whole(records: Path, processes: int) -> Frames:
    """The frames ``processes`` processes build from ``records`` equal those of one reading it whole
    (returned)."""
    whole = flatten(read_records(records))
    with FileReading(records, processes) as reading:
        built = reading.frames()
    for field in dataclasses.fields(Frames):
        pd.testing.assert_frame_equal(getattr(built, field.name), getattr(whole, field.name), check_exact=True,
                                      obj=f"Frames.{field.name}")
    return whole


def test_parts_read_in_other_processes_build_the_frames_of_one(fleet: FleetFiles) -> None:
    size = fleet.records.stat().st_size
    for start, end in ((0, size // 3), (size // 3, 2 * size // 3)):  # cuts as FileReading makes (1 MiB or more)
        # a device on both sides of each cut: joined wrongly, its windows or hardware would differ
        assert _devices(fleet.records, start, end) & _devices(fleet.records, end, None)
    whole = assert_read_in_parts_as_whole(fleet.records, 3)
    assert len(whole.usb) and len(whole.displays) and len(whole.tools) and len(whole.sessions) and len(whole.probes)


def _sizes(bounds: list[int]) -> list[int]:
    return [end - start for start, end in zip(bounds, bounds[1:])]


def test_the_last_parts_are_a_half_and_a_quarter_part() -> None:
    """Two processes on a 2 GB file: 32 parts, the last two a quarter of a part and the two before
    them a half, so neither process waits long for the other's last part; a file too small for
    such a tail (a quarter part under 1 MiB) is cut into parts of one size, and one process reads
    it whole."""
    size = 2_056_196_855
    bounds = part_bounds(size, 2)
    sizes = _sizes(bounds)
    assert bounds[0] == 0 and bounds[-1] == size and len(sizes) == 32
    part = sizes[0]
    assert {abs(each - part) <= 1 for each in sizes[:28]} == {True}
    assert [round(each / part, 3) for each in sizes[28:]] == [0.5, 0.5, 0.25, 0.25]
    small = 40 * MIN_PART_BYTES
    assert _sizes(part_bounds(small, 2)) == [small // 32] * 32
    assert part_bounds(small, 1) == [0, small]


def test_parts_with_a_smaller_tail_build_the_frames_of_one(fleet: FleetFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "MIN_PART_BYTES", 1 << 14)  # parts small enough for the fleet's 3 MiB to taper
    size = fleet.records.stat().st_size
    sizes = _sizes(part_bounds(size, 2))
    assert len(sizes) == 32 and sizes[-1] < sizes[-3] < sizes[0]
    assert_read_in_parts_as_whole(fleet.records, 2)


def test_two_workers_write_the_verdicts_of_one(fleet: FleetFiles) -> None:
    one, two = _detect(fleet, fleet.records, 1), _detect(fleet, fleet.records, 2)
    assert one.returncode == two.returncode == 0, (one.stderr, two.stderr)
    assert two.stdout == one.stdout
    verdicts = {verdict["device_id"]: verdict["verdict"] for verdict in map(orjson.loads, one.stdout.splitlines())}
    assert set(verdicts) == _devices(fleet.records, 0, None)
    assert {"farm", "clear"} <= set(verdicts.values())


@pytest.mark.parametrize(("bad", "named"), [
    (b"{not json", "{path} line {line}: not valid JSON ("),
    (b'{"report": {"seq": 1}}', "record {record}: report.device_id and report.window_end are required"),
])
def test_a_refused_record_in_a_later_part_is_named_as_one_process_names_it(
        fleet: FleetFiles, tmp_path: Path, bad: bytes, named: str) -> None:
    lines = fleet.records.read_bytes().splitlines()
    at = len(lines) * 9 // 10  # in the second part of two
    lines[at:at] = [b"", bad]  # after a blank line: lines and records are numbered apart
    records = tmp_path / "records.jsonl"
    records.write_bytes(b"\n".join(lines) + b"\n")
    one, two = _detect(fleet, records, 1), _detect(fleet, records, 2)
    assert one.returncode == two.returncode == 2
    assert two.stderr == one.stderr
    [message] = one.stderr.decode().splitlines()
    assert message.startswith(f"farmwatch-detect: {named.format(path=records, line=at + 2, record=at + 1)}")


def test_detectors_shared_among_processes_give_the_verdicts_of_one(fleet: FleetFiles) -> None:
    frames = flatten(read_records(fleet.records))
    roster, anchors = load_roster(fleet.roster), load_anchors(fleet.anchors)
    now = datetime(2026, 11, 4, tzinfo=timezone.utc)
    one, three = (pipeline.score_frames(frames, roster, anchors, now, processes=processes) for processes in (1, 3))
    assert [to_wire(verdict) for verdict in three] == [to_wire(verdict) for verdict in one]
    assert len({finding.detector for verdict in one for finding in verdict.findings}) >= 4  # from several detectors


_SCORING_PROCESS = os.getpid()
_FAILED_ELSEWHERE = multiprocessing.Event()  # created before the fork: shared with the forked helper


class _FailingInHelper:
    """Fails in a forked helper; in the scoring process it waits for that failure and succeeds. So
    whichever of two such detectors each process takes first (under load the helper can start its
    first one before the scoring process does), the failure is the helper's."""

    def fit(self, frames: Frames, context: Any) -> _FailingInHelper:
        if os.getpid() != _SCORING_PROCESS:
            _FAILED_ELSEWHERE.set()
            raise ValueError(f"failed in process {os.getpid()}")
        assert _FAILED_ELSEWHERE.wait(timeout=120), "the forked helper took no detector"
        return self

    def detect(self, frames: Frames, context: Any) -> Iterator[DeviceFinding]:
        return iter(())


def test_a_detector_failing_in_a_forked_process_fails_the_scoring(
        fleet: FleetFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "REGISTRY", {"first": _FailingInHelper, "second": _FailingInHelper})
    frames = flatten(read_records(fleet.records))
    _FAILED_ELSEWHERE.clear()
    with pytest.raises(ValueError, match="failed in process") as failed:
        pipeline.score_frames(frames, [], [], datetime(2026, 11, 4, tzinfo=timezone.utc), processes=2)
    assert str(os.getpid()) not in str(failed.value)  # it failed in the helper, and was raised here
    assert _FAILED_ELSEWHERE.is_set()


def test_workers_must_be_a_positive_number(fleet: FleetFiles) -> None:
    done = _detect(fleet, fleet.records, 0)
    assert done.returncode == 2 and b"--workers: not a number of processes (1 or more): '0'" in done.stderr


def test_the_command_forks_its_readers_before_importing_the_detectors() -> None:
    """farmwatch-detect's module imports no detector library, nor pandas, nor the contract's models
    (pydantic, for the roster and the verdicts), so its reading processes start (and are forked)
    without them: the scoring process imports them while the others read."""
    code = ("import sys, farmwatch.detectors.cli; "
            "print(sorted({'sklearn', 'scipy', 'pandas', 'pydantic'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_a_part_is_read_and_reduced_without_pandas(fleet: FleetFiles) -> None:
    """A reading process reduces its part of the file into columns without importing pandas (the
    frames are built, with pandas, in the scoring process only)."""
    code = ("import sys; from farmwatch.detectors.shards import _gathered_part; "
            f"part = _gathered_part(__import__('pathlib').Path({str(fleet.records)!r}), 0, {MIN_PART_BYTES}, {{}}); "
            "print(part.windows > 0, 'pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["True", "False"]


def test_a_process_busy_elsewhere_takes_fewer_parts(fleet: FleetFiles) -> None:
    """The parts are taken by whichever process is free: while this one is busy (it imports the
    detectors in farmwatch-detect), the other reads every part, and the frames are still those of
    one process reading the file whole."""
    reading = FileReading(fleet.records, workers=2)
    shared = reading._shared
    assert shared is not None and shared._tasks >= 3
    deadline = time.monotonic() + 120
    while shared._taken.value <= shared._tasks and time.monotonic() < deadline:  # the helper takes every part
        time.sleep(0.05)
    taken = list(shared._each_taken())
    assert taken == []  # none left for this process
    built, whole = reading.frames(), flatten(read_records(fleet.records))
    for field in dataclasses.fields(Frames):
        pd.testing.assert_frame_equal(getattr(built, field.name), getattr(whole, field.name), check_exact=True,
                                      obj=f"Frames.{field.name}")


def test_a_bad_roster_found_while_the_other_process_reads_stops_the_run(fleet: FleetFiles, tmp_path: Path) -> None:
    """The roster is read once the reading processes are forked (its models' import then runs beside
    their reading): a bad one still ends the run with exit status 2, its line named, no verdict
    written."""
    roster = tmp_path / "roster.csv"
    roster.write_text(fleet.roster.read_text().replace(",", ";", 1))  # the header names no columns the roster has
    out = tmp_path / "verdicts.jsonl"
    done = subprocess.run([str(DETECT), str(fleet.records), "--roster", str(roster), "--workers", "2",
                           "--out", str(out)], capture_output=True, timeout=300)
    assert done.returncode == 2 and done.stderr.decode().startswith(f"farmwatch-detect: {roster} line 1:")
    assert not out.exists()
