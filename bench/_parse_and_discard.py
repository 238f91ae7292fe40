"""The ingest benchmark's baseline server: the collector's HTTP stack that parses each report and keeps nothing.

FastAPI on uvicorn as ``farmwatch-collector serve`` runs them (the report route a plain Starlette
route served ahead of the middleware stack, ``direct_route.serve_ahead``; the same event loop, HTTP
parser, garbage-collector settings and worker count), and the
collector's own body reading (size cap, gzip) and strict contract parsing
(``ingest.parse_report``); no token lookup, no quota, no database. What the collector does beyond
this is what storing costs. Run by bench/collector_ingest.py:
``python bench/_parse_and_discard.py --port P --workers N``.
"""

from __future__ import annotations

import argparse
import os
import socket
from datetime import datetime, timedelta, timezone

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from farmwatch.collector import ingest
from farmwatch.collector.app import REPORTS_PATH
from farmwatch.collector.direct_route import serve_ahead
from farmwatch.collector.gc_tuning import settle_long_lived
from farmwatch.collector.limits import Limits

MAX_REPORT_BYTES = 1_048_576  # the bench collector's max_report_bytes


def discarding_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None)
    skew = timedelta(seconds=Limits().max_clock_skew_seconds)

    async def post_report(request: Request) -> JSONResponse:
        try:
            body = await ingest.read_body(request.stream(), limit=MAX_REPORT_BYTES,
                                          declared_length=request.headers.get("content-length"),
                                          encoding=request.headers.get("content-encoding"))
            report = ingest.parse_report(body, datetime.now(timezone.utc) + skew)
        except ingest.Rejected as refused:
            return JSONResponse({"errors": refused.errors}, status_code=refused.status)
        return JSONResponse({"accepted": report.seq}, status_code=202)

    app.router.routes.insert(0, Route(REPORTS_PATH, post_report, methods=["POST"]))  # as the collector's
    serve_ahead(app, "POST", REPORTS_PATH, post_report)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the listening socket")
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", args.port), backlog=2048)
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            break
    app = discarding_app()
    settle_long_lived()  # as serve does
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


if __name__ == "__main__":
    main()
