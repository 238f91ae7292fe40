"""A route served ahead of the middleware stack (direct_route.serve_ahead), on a real FastAPI app:
its requests skip the stack, its failures are answered by the app's own exception handlers, and
every other request (other methods on its path included) goes through the stack as before; an app
with middleware of its own serves the route through the stack, where that middleware sees it."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from farmwatch.collector.direct_route import serve_ahead


class Refused(Exception):
    pass


class RefusedHarder(Refused):
    pass


def build(own_middleware: bool = False) -> tuple[FastAPI, list[str]]:
    """An app with ``POST /busy`` served ahead, and the requests that reached its middleware stack
    (recorded outside Starlette's own layers, or by middleware of the app's own)."""
    app = FastAPI()
    seen: list[str] = []

    class Recording:
        def __init__(self, app: ASGIApp) -> None:  # Starlette before 0.37 passes it by name
            self.inner = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.inner(scope, receive, send)

    if own_middleware:
        app.add_middleware(Recording)
    else:
        build_stack = app.build_middleware_stack
        app.build_middleware_stack = lambda: Recording(build_stack())  # type: ignore[method-assign]

    async def busy(request: Request) -> Response:
        body = await request.body()
        if body == b"refuse":
            raise RefusedHarder("no")
        if body == b"break":
            raise RuntimeError("unexpected")
        return JSONResponse({"got": body.decode()}, status_code=202)

    @app.exception_handler(Refused)
    async def refused(_request: Request, failure: Refused) -> JSONResponse:
        return JSONResponse({"errors": [{"field": "(body)", "message": str(failure)}]}, status_code=422)

    @app.exception_handler(Exception)
    async def failed(_request: Request, _failure: Exception) -> JSONResponse:
        return JSONResponse({"errors": [{"field": "(server)", "message": "internal"}]}, status_code=500)

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {"ok": "yes"}

    app.router.routes.insert(0, Route("/busy", busy, methods=["POST"]))
    serve_ahead(app, "POST", "/busy", busy)
    return app, seen


def test_the_route_skips_the_stack_and_everything_else_goes_through_it() -> None:
    app, seen = build()
    with TestClient(app) as client:
        answer = client.post("/busy", content=b"hello")
        assert (answer.status_code, answer.json()) == (202, {"got": "hello"})
        assert client.get("/other").json() == {"ok": "yes"}
        assert client.get("/busy").status_code == 405  # other methods: the route table, through the stack
    assert seen == ["GET /other", "GET /busy"]


def test_a_failure_is_answered_by_the_apps_handler_for_its_class() -> None:
    app, seen = build()
    with TestClient(app) as client:
        answer = client.post("/busy", content=b"refuse")
    assert (answer.status_code, answer.json()) == (422, {"errors": [{"field": "(body)", "message": "no"}]})
    assert seen == []


def test_an_unexpected_failure_gets_the_apps_500_answer_and_reaches_the_server() -> None:
    app, _ = build()
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/busy", content=b"break")
    assert (answer.status_code, answer.json()) == (500, {"errors": [{"field": "(server)", "message": "internal"}]})
    with TestClient(app) as client, pytest.raises(RuntimeError, match="unexpected"):
        client.post("/busy", content=b"break")  # re-raised after the answer, for the server's log


def test_middleware_of_the_apps_own_sees_the_route_too() -> None:
    app, seen = build(own_middleware=True)
    with TestClient(app) as client:
        answer = client.post("/busy", content=b"hello")
        assert (answer.status_code, answer.json()) == (202, {"got": "hello"})
        refused = client.post("/busy", content=b"refuse")
    assert (refused.status_code, refused.json()) == (422, {"errors": [{"field": "(body)", "message": "no"}]})
    assert seen == ["POST /busy", "POST /busy"]
