"""Property tests: whatever a report holds, the contract either refuses it by name or every later stage
can hold it (canonical JSON, the exported JSON Schema, the detectors' pandas frames and verdicts).

Hypothesis puts hostile values (huge and negative integers, infinities, NaN, NUL, times from year 1 to
9999 in any offset, deep and odd unknown fields) into any leaf of our hand-written fixture report.
The bug that started this (a window_end in 2262 broke every scoring run for the whole fleet) is one
of the examples pinned below, so it is tried on every run.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from farmwatch.contract import INT_LIMIT, NOT_AFTER, Report, field_errors, to_wire
from farmwatch.detectors.pipeline import score
from farmwatch.schema_export import SCHEMA_DIR

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reports" / "report-linux-rustdesk.json").read_text())
SCHEMA = json.loads((SCHEMA_DIR / "report.json").read_text())
RECEIVED = datetime(2026, 10, 2, 8, 36, tzinfo=timezone.utc)
SKEW = timedelta(days=1)
NOW = RECEIVED + timedelta(minutes=5)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in leaf_paths(item, (*path, key))] or [path]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in leaf_paths(item, (*path, index))] or [path]
    return [path]


PATHS = [path for path in leaf_paths(FIXTURE) if path and path[0] != "schema"]

times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(hours=14))]),
).map(lambda moment: moment.isoformat())
hostile_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, 2**63 - 1, 2**53, INT_LIMIT, -(2**63), 0, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    st.sampled_from(["\x00", "a\x00b", "", "9999-12-31T23:30:00-05:00", "2262-04-12T00:00:00Z"]),
    times,
    st.booleans(),
    st.none(),
)
hostile_json = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


def place(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


def body_of(document: dict[str, Any]) -> bytes:
    # json.dumps writes Infinity and NaN as bare tokens, the way a hostile client would send them.
    return json.dumps(document, allow_nan=True).encode()


def record_of(report: Report) -> dict[str, Any]:
    geo = {"country": None, "asn": None, "asn_org": None, "network_kind": "unknown"}
    return {"received_at": "2026-10-02T08:36:00Z", "source_ip": "127.0.0.1", "geo": geo, "report": to_wire(report)}


def check(document: dict[str, Any]) -> None:
    """Refused with named fields, or held by every later stage."""
    try:
        report = Report.model_validate_json(body_of(document), context={NOT_AFTER: RECEIVED + SKEW})
    except ValidationError as refused:
        named = field_errors(refused)
        assert named and all(item["field"] and item["message"] for item in named)
        return
    wire = to_wire(report)
    stored = orjson.dumps(wire)  # what the collector stores: raises on integers past 64 bits
    assert b"\\u0000" not in stored  # PostgreSQL cannot hold NUL in text, in values or in field names
    jsonschema.validate(json.loads(json.dumps(wire)), SCHEMA)
    assert report.window_start <= report.window_end <= RECEIVED + SKEW
    neighbour = Report.model_validate_json(body_of({**FIXTURE, "device_id": "neighbour"}))
    verdicts = score([record_of(report), record_of(neighbour)], [], [], NOW)
    assert {verdict.device_id for verdict in verdicts} == {report.device_id, "neighbour"}
    assert all(math.isfinite(verdict.risk) for verdict in verdicts)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=hostile_scalars)
@example(path=("window_end",), value="2262-04-12T00:00:00Z")
@example(path=("window_end",), value="9999-12-31T23:30:00-05:00")
@example(path=("seq",), value=2**63)
@example(path=("input", "active_seconds"), value=math.inf)
@example(path=("agent", "hostname"), value="tp\x00anna")
def test_any_leaf_value_is_refused_or_held(path: tuple[Any, ...], value: Any) -> None:
    check(place(FIXTURE, path, value))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["", "agent", "host", "network", "input"]), name=st.text(min_size=1, max_size=6),
       value=hostile_json)
@example(section="", name="x", value={"deep": [2**70]})
@example(section="host", name="k\x00", value=1)
@example(section="input", name="extra", value=[math.nan])
def test_any_unknown_field_is_refused_or_held(section: str, name: str, value: Any) -> None:
    document = copy.deepcopy(FIXTURE)
    target = document[section] if section else document
    if name in target:
        return  # a known field: the leaf test covers those
    target[name] = value
    check(document)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"window_end": "2262-04-12T00:00:00Z"}, "window_end", id="past-pandas-range"),
        pytest.param({"window_end": "9999-12-31T23:30:00-05:00"}, "window_end", id="no-utc-form"),
        pytest.param({"window_end": "1999-12-31T23:59:59Z"}, "window_end", id="before-2000"),
        pytest.param({"window_start": "2026-10-02T08:40:00Z"}, "window_end", id="ends-before-start"),
        pytest.param({"window_end": "2026-10-03T08:36:01Z"}, "window_end", id="past-the-skew"),
        pytest.param({"seq": 2**63}, "seq", id="seq-2^63"),
        pytest.param({"seq": INT_LIMIT + 1}, "seq", id="seq-past-2^53"),
        pytest.param({"extra": {"n": 2**64}}, "extra", id="unknown-field-huge-int"),
    ],
)
def test_each_known_overflow_is_refused_naming_its_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Report.model_validate_json(body_of({**FIXTURE, **changes}), context={NOT_AFTER: RECEIVED + SKEW})
    assert [item["field"] for item in field_errors(refused.value)] == [field]


def test_the_largest_seq_and_latest_time_accepted_still_score() -> None:
    check({**FIXTURE, "seq": INT_LIMIT, "window_end": (RECEIVED + SKEW).isoformat()})
    report = Report.model_validate_json(body_of({**FIXTURE, "seq": INT_LIMIT}))
    assert report.seq + 1 < 2**63  # the next_seq handed out after a re-enrolment fits BIGINT
