"""The collector's OpenAPI document, describing the request bodies and error bodies it really has.

The routes read their bodies themselves (a streamed size cap, gzip, the contract's strict parser),
so FastAPI cannot see them; this module adds what it cannot see: each body's JSON Schema (from
the same pydantic models that parse it) and the ``{"errors": [{field, message}]}`` body of every
refusal. Tools that test an API from its document (schemathesis) then exercise the real inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from starlette.routing import BaseRoute

REF = "#/components/schemas/{model}"


class FieldError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    """The refused field as a dotted path (``network.probes[2].sent``), or ``(body)``, ``(path)``, a header name."""
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the collector."""

    model_config = ConfigDict(extra="forbid")
    errors: list[FieldError]


WHY = {
    401: "unknown, revoked or missing credential", 403: "the report names another device", 404: "no such resource",
    405: "method not allowed", 409: "seq already stored with other content", 413: "body too large",
    415: "unsupported Content-Encoding", 422: "a field is invalid (named in errors)",
    429: "rate limit or quota reached; see Retry-After", 500: "internal error", 503: "unavailable; see Retry-After",
}


def openapi_document(
    app: FastAPI, bodies: Mapping[tuple[str, str], type[BaseModel]], refusals: Mapping[tuple[str, str], Sequence[int]],
    extra_routes: Sequence[BaseRoute] = (),
) -> dict[str, Any]:
    """``app``'s OpenAPI document with ``bodies[(path, method)]`` as request bodies and the error body
    under each status of ``refusals[(path, method)]`` (every operation also gets 404, 405 and 500).
    ``extra_routes`` describe the routes ``app`` serves as plain Starlette routes (FastAPI skips those)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(title=app.title, version=app.version, routes=[*app.routes, *extra_routes])
    components = document.setdefault("components", {}).setdefault("schemas", {})
    documented: list[type[BaseModel]] = [*bodies.values(), ErrorBody]
    for model in documented:
        schema = model.model_json_schema(by_alias=True, ref_template=REF, mode="validation")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            body = bodies.get((path, method))
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": REF.format(model=body.__name__)}}},
                }
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's HTTPValidationError: never sent, our body replaces it
            for status in sorted({*refusals.get((path, method), ()), 404, 405, 500}):
                responses[str(status)] = {
                    "description": WHY[status],
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}},
                }
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    app.openapi_schema = document
    return document
