"""One busy route served ahead of a Starlette app's middleware stack.

Every request through FastAPI passes six middleware layers (server errors, exception telemetry, body
limit, exception handlers, an exit stack) and the router before its endpoint, each an ASGI call with
its own ``send`` wrapper: about a fifth of the serving event loop's time per report under
bench/collector_ingest.py's load (py-spy --gil, issue 13), for a route that reads its own body,
answers its own refusals and sets no middleware state. :func:`serve_ahead` hands that one route's
requests straight to its endpoint; everything else goes through the stack as before. Only
Starlette's own layers are skipped so: middleware the app adds itself (``add_middleware``) is there
to see every request, so an app with any serves the route through the stack too. What the
endpoint raises is answered by the app's own exception handler for it, found as Starlette finds it
(the exception's classes in order), so a refusal looks the same either way; anything without one
is answered 500 by the app's ``Exception`` handler and then re-raised for the server's log, as
Starlette's ``ServerErrorMiddleware`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


def serve_ahead(app: Starlette, method: str, path: str, endpoint: Endpoint) -> None:
    """Serve ``method`` requests for ``path`` with ``endpoint`` before ``app``'s middleware stack.

    The route stays in ``app``'s own routes too (other methods on ``path`` get its 405 there). When
    the stack is built (at the app's first request), an app with middleware of its own serves the
    route through the stack, where that middleware sees it."""
    build_stack = app.build_middleware_stack

    def build_with_route_ahead() -> ASGIApp:
        stack = build_stack()
        if app.user_middleware:
            return stack

        async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and scope["method"] == method and _route_path(scope) == path:
                await _serve(app, endpoint, scope, receive, send)
            else:
                await stack(scope, receive, send)

        return dispatch

    app.build_middleware_stack = build_with_route_ahead  # type: ignore[method-assign]


async def _serve(app: Starlette, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive, send)
    try:
        response = await endpoint(request)
    except Exception as failure:  # noqa: BLE001 - answered as the app's handlers answer it
        handler = _handler(app, failure)
        if handler is not None:
            await (await handler(request, failure))(scope, receive, send)
            return
        fallback = app.exception_handlers.get(Exception) or app.exception_handlers.get(500)
        answer = PlainTextResponse("Internal Server Error", status_code=500)
        if fallback is not None:
            answer = await fallback(request, failure)
        await answer(scope, receive, send)
        raise  # the traceback goes to the server log, as after ServerErrorMiddleware's answer
    await response(scope, receive, send)


def _handler(app: Starlette, failure: Exception) -> Callable[..., Any] | None:
    """The app's exception handler for ``failure`` other than the catch-all one (Starlette's lookup
    order). The collector's handlers are all coroutines, as this calls them."""
    for kind in type(failure).__mro__:
        if kind is Exception:
            return None
        handler: Callable[..., Any] | None = app.exception_handlers.get(kind)
        if handler is not None:
            return handler
    return None


def _route_path(scope: Scope) -> str:
    """The request's path below the app's root path, as Starlette's router matches it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
