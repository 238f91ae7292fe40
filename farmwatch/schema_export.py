"""Export the wire contract's JSON Schema (report, ingest record, verdict) into ``farmwatch/schema/``.

The pydantic models in :mod:`farmwatch.contract` are the source of truth; the exported files let
tools outside Python (SIEMs, other agents) validate documents. A test fails when the committed files
differ from a fresh export, so run ``python -m farmwatch.schema_export`` after changing the contract.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from farmwatch.contract import IngestRecord, Report, Verdict

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
DOCUMENTS: dict[str, type[BaseModel]] = {
    "report.json": Report,
    "ingest-record.json": IngestRecord,
    "verdict.json": Verdict,
}


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12) of each wire document, as parsed (validation mode)."""
    exported = {}
    for name, model in DOCUMENTS.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        exported[name] = schema
    return exported


def render(schema: dict[str, Any]) -> str:
    """Stable text form: sorted keys, two-space indent, trailing newline (diff-friendly)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m farmwatch.schema_export",
        description="Write the JSON Schema of the farmwatch wire documents (report, ingest record, "
        "verdict) generated from farmwatch.contract.",
    )
    parser.add_argument(
        "--out", type=Path, default=SCHEMA_DIR, help=f"folder to write into (default: {SCHEMA_DIR})"
    )
    args = parser.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, schema in schemas().items():
            (args.out / name).write_text(render(schema), encoding="utf-8")
    except OSError as failure:
        print(f"schema_export: cannot write into {args.out}: {failure.strerror or failure}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(DOCUMENTS)} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
