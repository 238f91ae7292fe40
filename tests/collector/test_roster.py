"""Roster and anchor CSV parsing: good files load, each kind of bad row names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmwatch.roster import TableError, load_anchors, load_roster

ROSTER_HEADER = "device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools\n"
ANCHOR_HEADER = "name,address,port,latitude,longitude\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_roster_loads_lists_and_empty_cells(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "roster.csv",
        ROSTER_HEADER
        + "lt-0007,E-7,DE,Leipzig,51.34,12.37,Europe/Berlin, rustdesk ;teamviewer;\n"
        + "\n"
        + "lt-0008,E-8,,,,,,\n",
    )
    first, second = load_roster(path)
    assert first.device_id == "lt-0007"
    assert first.latitude == pytest.approx(51.34)
    assert first.approved_tools == ["rustdesk", "teamviewer"]
    assert second.country is None and second.latitude is None and second.timezone is None
    assert second.approved_tools == []


def test_columns_may_come_in_any_order(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "port,name,longitude,latitude,address\n8443,eu-1,2.35,48.86,192.0.2.5\n")
    (anchor,) = load_anchors(path)
    assert (anchor.name, anchor.address, anchor.port) == ("eu-1", "192.0.2.5", 8443)
    assert (anchor.latitude, anchor.longitude) == (48.86, 2.35)


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        pytest.param("lt-1,E1,US,X,abc,1,UTC,\n", 2, "latitude", id="not-a-number"),
        pytest.param("lt-1,E1,US,X,1,1,UTC,\nlt-2,E2,US,X,95,1,UTC,\n", 3, "latitude", id="out-of-range"),
        pytest.param("lt-1,E1,US,X,1,1,UTC,\n\nlt-1,E9,US,X,1,1,UTC,\n", 4, "already appears on line 2", id="duplicate"),
        pytest.param("lt-1,E1,US,X,1,1\n", 2, "has 6 cells", id="short-row"),
        pytest.param(",E1,US,X,1,1,UTC,\n", 2, "device_id", id="missing-id"),
    ],
)
def test_bad_roster_row_names_file_and_line(tmp_path: Path, body: str, line: int, words: str) -> None:
    path = write(tmp_path, "roster.csv", ROSTER_HEADER + body)
    with pytest.raises(TableError) as caught:
        load_roster(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert words in str(caught.value)


def test_bad_anchor_port_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "anchors.csv", ANCHOR_HEADER + "us-1,192.0.2.1,443,40,-70\nus-2,192.0.2.2,99999,40,-70\n")
    with pytest.raises(TableError, match=r"line 3: port: "):
        load_anchors(path)


def test_header_missing_a_column(tmp_path: Path) -> None:
    path = write(tmp_path, "anchors.csv", "name,address,latitude,longitude\nx,192.0.2.1,1,1\n")
    with pytest.raises(TableError, match=r"line 1: header lacks column\(s\) port"):
        load_anchors(path)


def test_missing_file_is_a_table_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot be read"):
        load_roster(tmp_path / "absent.csv")


def test_shared_examples_load_when_present() -> None:
    examples = Path(__file__).resolve().parents[3] / "shared" / "examples"
    if not examples.is_dir():
        pytest.skip(f"{examples} is absent (the shared design folder sits beside the repository)")
    assert {row.device_id for row in load_roster(examples / "roster.csv")} >= {"dev-81c07d5b12"}
    assert [a.name for a in load_anchors(examples / "anchors.csv")] == ["us-east", "us-central", "us-west"]
