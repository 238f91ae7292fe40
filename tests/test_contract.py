"""The wire contract: example documents validate, survive a round trip, and match the JSON Schema.

Two sets of examples: the design's shared ones (``../shared/examples``, beside the repository, skipped
with the reason when absent) and our own hand-written ones in ``tests/fixtures/reports`` (always run).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel

from farmwatch.contract import IngestRecord, Report, Verdict, to_wire
from farmwatch.roster import load_anchors, load_roster
from farmwatch.schema_export import DOCUMENTS, SCHEMA_DIR, render, schemas

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "examples"
OURS = ROOT / "tests" / "fixtures" / "reports"

# File-name prefix -> (model, schema file). Every data file must match one, so a new kind of example
# cannot slip past this test untested.
KINDS: dict[str, tuple[type[BaseModel], str]] = {
    "report": (Report, "report.json"),
    "record": (IngestRecord, "ingest-record.json"),
    "verdict": (Verdict, "verdict.json"),
}


def documents(folder: Path) -> list[Any]:
    """One pytest.param per JSON document (each line of a .jsonl) in the folder."""
    params = []
    for path in sorted(folder.glob("*.json*")):
        kind = next((k for k in KINDS if path.name.startswith(k)), None)
        assert kind, f"{path.name}: no contract model is known for this example file"
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for number, text in enumerate(lines, start=1):
            if text.strip():
                params.append(pytest.param(kind, text, id=f"{path.name}:{number}"))
    return params


def same(original: Any, wire: Any) -> bool:
    """Equal as JSON values, allowing what the contract allows: two spellings of one instant ("...Z",
    "+00:00", ".250") are equal, and an optional section left out may come back as its default."""
    if isinstance(original, dict) and isinstance(wire, dict):
        filled_in = {k: wire[k] for k in wire.keys() - original.keys()}
        return (
            original.keys() <= wire.keys()
            and all(value in (None, []) for value in filled_in.values())
            and all(same(original[k], wire[k]) for k in original)
        )
    if isinstance(original, list) and isinstance(wire, list):
        return len(original) == len(wire) and all(map(same, original, wire))
    if isinstance(original, str) and isinstance(wire, str) and original != wire:
        try:
            return datetime.fromisoformat(original) == datetime.fromisoformat(wire)
        except ValueError:
            return False
    return bool(original == wire)


def check_document(kind: str, text: str) -> None:
    model, schema_file = KINDS[kind]
    parsed = model.model_validate_json(text)
    wire = to_wire(parsed)
    assert model.model_validate_json(json.dumps(wire)) == parsed
    original = json.loads(text)
    assert same(original, wire), "the wire form differs from the example (a field lost or renamed)"
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    jsonschema.validate(original, schema)
    jsonschema.validate(wire, schema)


@pytest.mark.parametrize(("kind", "text"), documents(OURS))
def test_our_examples_validate_and_round_trip(kind: str, text: str) -> None:
    check_document(kind, text)


def test_our_examples_cover_every_document_kind() -> None:
    assert {param.values[0] for param in documents(OURS)} == set(KINDS)


def test_unknown_report_fields_are_kept() -> None:
    report = Report.model_validate_json((OURS / "report-minimal-future-field.json").read_text())
    wire = to_wire(report)
    assert wire["battery"] == {"percent": 54, "charging": False}
    assert wire["agent"]["build"] == "nightly"


def test_shared_examples_validate_and_round_trip() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared design examples sit beside the repository")
    checked = 0
    for param in documents(SHARED):
        check_document(*param.values)
        checked += 1
    assert checked >= 1
    for table in sorted(SHARED.glob("*.csv")):
        loader = {"roster": load_roster, "anchors": load_anchors}[table.stem.split("-")[0]]
        assert loader(table), f"{table.name} holds no rows"


def test_shared_examples_name_each_device_once_per_seq() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared design examples sit beside the repository")
    seen = [
        (r.report.device_id, r.report.seq)
        for r in map(IngestRecord.model_validate_json, (SHARED / "records.jsonl").read_text().splitlines())
    ]
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_committed_schema_equals_a_fresh_export(name: str) -> None:
    committed = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert committed == render(schemas()[name]), "run: python -m farmwatch.schema_export"


def test_strict_types_are_rejected_by_schema_and_model() -> None:
    report = json.loads((OURS / "report-linux-rustdesk.json").read_text())
    report["seq"] = "17"
    schema = json.loads((SCHEMA_DIR / "report.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(report, schema)
    with pytest.raises(ValueError, match="seq"):
        Report.model_validate_json(json.dumps(report))


def test_shipped_example_fleet_validates_and_matches_the_design_copy() -> None:
    fleet = Path(__file__).resolve().parent / "fixtures" / "example_fleet"
    records = [IngestRecord.model_validate_json(line) for line in (fleet / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and load_roster(fleet / "roster.csv") and load_anchors(fleet / "anchors.csv")
    if SHARED.is_dir():
        for name in ("records.jsonl", "roster.csv", "anchors.csv"):
            assert (fleet / name).read_bytes() == (SHARED / name).read_bytes(), f"{name} drifted from the design"
