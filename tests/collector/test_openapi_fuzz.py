"""schemathesis over the real collector's own OpenAPI document: no client input ever earns a 5xx.

The document describes the real request bodies (the contract's report, enrolment, verify) and the
``{"errors": [...]}`` body of every refusal, so schemathesis generates valid and invalid bodies,
headers and paths for every operation; each answer must be below 500, and every refusal must be
the documented error body. Reports are addressed to the device whose token sends them, so they
reach the store's checks instead of stopping at 403.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from collector_process import RunningCollector
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from farmwatch.collector.openapi import ErrorBody

pytestmark = pytest.mark.slow

CONFIG = """\
[detection]
interval_seconds = 3600
refresh_wait_seconds = 300
"""
EXAMPLES = 60


def test_no_generated_input_earns_a_5xx(collector_factory: Any) -> None:
    collector: RunningCollector = collector_factory(CONFIG)
    device = collector.enrol()
    schema = schemathesis.openapi.from_url(f"{collector.url}/openapi.json")
    statuses: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= {"/api/v1/enroll", "/api/v1/reports", "/api/v1/verify", "/api/v1/devices/{device_id}"}
    request_bodies = {op.path for op in operations if op.body}
    assert request_bodies == {"/api/v1/enroll", "/api/v1/reports", "/api/v1/verify"}

    for operation in operations:
        token = collector.analyst_token if operation.path.startswith("/api/v1/devices") else device["token"]
        for mode in schemathesis.GenerationMode:

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def exercise(case: schemathesis.Case) -> None:
                if operation.path == "/api/v1/reports" and isinstance(case.body, dict):
                    case.body["device_id"] = device["device_id"]
                if operation.path == "/api/v1/enroll" and isinstance(case.body, dict) and mode.name == "POSITIVE":
                    case.body["enroll_secret"] = collector.enroll_secret
                response = case.call(base_url=collector.url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
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
