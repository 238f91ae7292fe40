"""schemathesis over the real collector's own OpenAPI document: no client input ever earns a 5xx.

The document describes the real request bodies (the contract's report, enrolment, verify) and the
``{"errors": [...]}`` body of every refusal, so schemathesis generates valid and invalid bodies,
headers and paths for every operation; each answer must be below 500, and every refusal must be
the documented error body. Reports are addressed to the device whose token sends them, so they
reach the store's checks instead of stopping at 403.
"""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import schemathesis
from collector_helpers import wire_time
from collector_process import RunningCollector
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from farmwatch.collector.openapi import ErrorBody

pytestmark = pytest.mark.slow

CONFIG = """\
[detection]
interval_seconds = 3600
refresh_wait_seconds = 300

[limits]
# The console's forms answer a device token with 401, which spends the address's failed-auth
# budget; past it every route answers 429 and the fuzzing would stop reaching the store's checks.
failed_auth_per_address_per_minute = 100000
"""
EXAMPLES = 60


def recent_times(value: Any) -> Any:
    """The document with every date-time string moved to now, window_start kept before window_end."""
    if isinstance(value, dict):
        moved = {key: recent_times(item) for key, item in value.items()}
        if "window_start" in moved and "window_end" in moved:
            moved["window_start"] = wire_time(datetime.now(timezone.utc) - timedelta(minutes=5))
        return moved
    if isinstance(value, list):
        return [recent_times(item) for item in value]
    if isinstance(value, str) and value.startswith("20"):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return value
        return wire_time(datetime.now(timezone.utc))
    return value


def test_no_generated_input_earns_a_5xx(collector_factory: Any) -> None:
    collector: RunningCollector = collector_factory(CONFIG)
    device = collector.enrol()
    schema = schemathesis.openapi.from_url(f"{collector.url}/openapi.json")
    statuses: Counter[tuple[str, int]] = Counter()
    seqs = itertools.count(1)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # Token rotation last: every operation before it uses the token enrolled above.
    operations.sort(key=lambda op: op.path == "/api/v1/token")
    assert {op.path for op in operations} >= {"/api/v1/enroll", "/api/v1/reports", "/api/v1/verify", "/api/v1/devices/{device_id}"}
    request_bodies = {op.path for op in operations if op.body}
    assert request_bodies == {"/api/v1/enroll", "/api/v1/reports", "/api/v1/verify"}

    for operation in operations:
        analyst = operation.path.startswith("/api/v1/devices")
        for mode in schemathesis.GenerationMode:

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case: schemathesis.Case) -> None:
                if operation.path == "/api/v1/reports" and isinstance(case.body, dict):
                    case.body["device_id"] = device["device_id"]
                    if mode is schemathesis.GenerationMode.POSITIVE:
                        # Generated times spread over 2000..2099; most lie past the allowed clock skew.
                        case.body = {**recent_times(case.body), "seq": next(seqs)}  # hypothesis favours seq 1
                if operation.path == "/api/v1/enroll" and isinstance(case.body, dict) and mode.name == "POSITIVE":
                    case.body["enroll_secret"] = collector.enroll_secret
                token = collector.analyst_token if analyst else device["token"]
                response = case.call(base_url=collector.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
                if operation.path == "/api/v1/token" and response.status_code == 200:
                    device["token"] = response.json()["token"]  # rotated: the old one is revoked
                statuses[(operation.path, response.status_code)] += 1
                assert response.status_code < 500, f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:500]}"
                if response.status_code >= 400 and operation.path.startswith("/api/"):  # pages answer HTML
                    ErrorBody.model_validate_json(response.content)

            try:
                exercise()
            except Unsatisfiable:
                # Nothing in this operation can be made invalid (no body; a path parameter of any string).
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.path

    print("\nschemathesis answers by (path, status):")
    for (path, status), count in sorted(statuses.items()):
        print(f"  {path:32} {status}: {count}")
    assert statuses[("/api/v1/reports", 202)] > 0, "no generated report was ever accepted: the fuzzing only hit refusals"
    assert httpx.get(f"{collector.url}/healthz").status_code == 200
