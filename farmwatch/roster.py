"""Read the HR/IT roster and the latency-anchor list (CSV files with the headers below; examples in deploy/dev/).

Both tables come from people, so every problem is reported as ``FILE line N: what is wrong`` and
nothing is returned until the whole file is valid. Empty cells mean "unknown" (None);
``approved_tools`` is a ``;``-separated list of catalogue ids.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from farmwatch.contract import Anchor, RosterEntry, field_errors
from farmwatch.errors import FarmwatchError

ROSTER_COLUMNS = (
    "device_id",
    "employee_id",
    "country",
    "city",
    "latitude",
    "longitude",
    "timezone",
    "approved_tools",
)
ANCHOR_COLUMNS = ("name", "address", "port", "latitude", "longitude")

Row = TypeVar("Row", bound=BaseModel)


class TableError(FarmwatchError, ValueError):
    """A roster or anchor file that cannot be used; the message names the file and line."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        super().__init__(f"{path} line {line}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


def load_roster(path: Path | str) -> list[RosterEntry]:
    """Parse a roster CSV: one row per device, ``device_id`` unique."""
    return _load(path, ROSTER_COLUMNS, RosterEntry, "device_id", _roster_cells)


def load_anchors(path: Path | str) -> list[Anchor]:
    """Parse an anchor CSV: one latency-probe target per row, ``name`` unique."""
    return _load(path, ANCHOR_COLUMNS, Anchor, "name", _plain_cells)


def _plain_cells(cells: dict[str, str]) -> dict[str, Any]:
    return {key: (value.strip() or None) for key, value in cells.items()}


def _roster_cells(cells: dict[str, str]) -> dict[str, Any]:
    values = _plain_cells(cells)
    tools = values["approved_tools"] or ""
    values["approved_tools"] = [tool.strip() for tool in tools.split(";") if tool.strip()]
    return values


def _load(
    path: Path | str,
    columns: tuple[str, ...],
    model: type[Row],
    key: str,
    to_values: Callable[[dict[str, str]], dict[str, Any]],
) -> list[Row]:
    rows: list[Row] = []
    seen: dict[Any, int] = {}
    for line, cells in _rows(path, columns):
        try:
            # The CSV holds text, so numbers are parsed leniently here ("41.88" -> 41.88);
            # the wire contract stays strict.
            row = model.model_validate(to_values(cells), strict=False)
        except ValidationError as rejected:
            first = field_errors(rejected)[0]
            raise TableError(path, line, f"{first['field']}: {first['message']}") from None
        _check_coordinates(path, line, row)
        identity = getattr(row, key)
        if identity in seen:
            raise TableError(path, line, f"{key} {identity!r} already appears on line {seen[identity]}")
        seen[identity] = line
        rows.append(row)
    return rows


def _rows(path: Path | str, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, cells by column) for each data row, checking the header and cell count."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as failure:
        raise TableError(path, 0, f"cannot be read ({failure.strerror or failure})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [name for name in columns if name not in header]
            if missing:
                raise TableError(path, 1, f"header lacks column(s) {', '.join(missing)}; expected {','.join(columns)}")
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise TableError(
                        path, reader.line_num, f"has {len(cells)} cells, the header has {len(header)}"
                    )
                by_name = dict(zip(header, cells))
                yield reader.line_num, {name: by_name[name] for name in columns}
        except (csv.Error, UnicodeDecodeError) as broken:
            raise TableError(path, reader.line_num, f"is not valid CSV ({broken})") from None


def _check_coordinates(path: Path | str, line: int, row: BaseModel) -> None:
    for name, limit in (("latitude", 90.0), ("longitude", 180.0)):
        value = getattr(row, name, None)
        if value is not None and not -limit <= value <= limit:
            raise TableError(path, line, f"{name}: must be between -{limit:g} and {limit:g}, got {value}")
