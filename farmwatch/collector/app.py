"""The collector's HTTP surface, a thin FastAPI layer over ingest, storage and scoring
(described by its OpenAPI document, ``/openapi.json``).

:func:`create_app` builds everything from its arguments; importing this module starts nothing.
Blocking database work runs in the thread pool so one slow query never stalls the event loop.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import Route

from farmwatch.collector import ingest
from farmwatch.collector.admission import SpentQuotas, TokenMemory
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.console.routes import mount_console
from farmwatch.collector.delivery import Alerting
from farmwatch.collector.direct_route import serve_ahead
from farmwatch.collector.egress import GeoLookup
from farmwatch.collector.ingest import Rejected
from farmwatch.collector.metrics import Metrics
from farmwatch.collector.openapi import openapi_document
from farmwatch.collector.ratelimit import AddressLimiter
from farmwatch.collector.reducer_process import ReducerProcess
from farmwatch.collector.retention import RetentionJob
from farmwatch.collector.rollups import Reducer
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.scoring_process import ScoringProcesses
from farmwatch.collector.storage import Storage, StoredReport, token_digest
from farmwatch.collector.store_health import RETRY_AFTER_SECONDS, StoreHealth, disk_full, unavailable
from farmwatch.collector.writer_process import RESTART_SECONDS, WriterProcess
from farmwatch.contract import NO_NUL, Report, field_errors, to_wire

log = logging.getLogger("farmwatch.collector.app")
REPORTS_PATH = "/api/v1/reports"
SMALL_BODY = 64 * 1024  # enrol and verify requests are a few hundred bytes
INLINE_PARSE_BYTES = 64 * 1024  # a report this small parses faster than a hop to the thread pool
Text = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_NUL)]


class LocalWrites:
    """Report writes in this process (``create_app`` without ``writer_process``): each report is
    parsed here (a large one in the thread pool) and stored by the storage's group commit."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def write_report(self, received: ingest.Received) -> tuple[StoredReport, int]:
        """Parse and store ``received`` (:func:`farmwatch.collector.ingest.arriving`): its outcome and seq."""
        if len(received.body) <= INLINE_PARSE_BYTES:
            arriving = ingest.arriving(received)
        else:
            arriving = await run_in_threadpool(ingest.arriving, received)
        return await self.storage.write_report(arriving), arriving.record["report"]["seq"]


class EnrolRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    enroll_secret: str
    hostname: Text
    hardware_id: Text


class VerifyRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    seconds: Annotated[int, Field(ge=0, le=86_400)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def create_app(
    storage: Storage,
    config: CollectorConfig,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], datetime] = utcnow,
    background_scoring: bool = True,
    reducer_process: bool = False,
    writer_process: bool = False,
) -> FastAPI:
    """The collector app over ``storage``; metrics go to ``registry`` (a fresh one when None).

    ``reducer_process``: reduce stored reports into rollups in a child process (``serve`` does:
    :mod:`farmwatch.collector.reducer_process`), not in a thread beside ingest. ``writer_process``:
    store reports from a child process fed by the event loop (``serve`` does:
    :mod:`farmwatch.collector.writer_process`), not from a committer thread in this one."""
    metrics = Metrics(registry or CollectorRegistry(), device_count=lambda: _safe_count(storage))
    geo = GeoLookup(config.corporate_networks, config.city_db, config.asn_db)
    scorer = Scorer(storage, config, metrics, clock)
    alerting = Alerting(storage, config.outputs, config.public_url, metrics.registry, clock)
    retention = RetentionJob(storage, config.retention, metrics.registry, clock)
    url = storage.engine.url.render_as_string(hide_password=False)  # for the child processes
    writes: LocalWrites | WriterProcess = WriterProcess(url, metrics.registry) if writer_process else LocalWrites(storage)
    # Stored reports into rollups, outside the request path.
    reducer: Reducer | ReducerProcess = (
        ReducerProcess(url, config.lookback_hours, metrics.registry)
        if reducer_process else Reducer(storage, clock, metrics.registry, config.lookback_hours))
    # [detection] scoring_processes: the periodic scoring in child processes; this one keeps the
    # on-demand refreshes (scoring_process.py).
    scoring: Scorer | ScoringProcesses = scorer
    if background_scoring and config.scoring_processes:
        scoring = ScoringProcesses(url, config, metrics, config.scoring_processes)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if background_scoring:
            scoring.start()
        alerting.start()
        retention.start()
        reducer.start()
        if isinstance(writes, WriterProcess):
            await writes.start()
        try:
            yield
        finally:
            if isinstance(writes, WriterProcess):
                await writes.stop()
            scoring.stop()
            scorer.stop()
            alerting.stop()
            retention.stop()
            reducer.stop()

    app = FastAPI(title="farmwatch collector", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    console = mount_console(app, storage, scorer, clock)

    store_health = StoreHealth()
    metrics.store_full.set_function(lambda: 0.0 if store_health.full_since() is None else 1.0)

    def store_refusal(failure: Exception) -> Rejected:
        """503 + Retry-After for a store that cannot write now: the agent keeps the report and retries."""
        if disk_full(failure):
            store_health.refused_for_space(clock())
            metrics.store_full_refusals.inc()
            message = "the collector's database has no space left; the report was not stored, send it again later"
        else:
            message = "the collector's database is unavailable; send it again later"
        return Rejected(503, "unavailable", [{"field": "(server)", "message": message}], retry_after=RETRY_AFTER_SECONDS)

    # [limits]: per source address, in this process (ratelimit.py); per device, in the database (quotas.py).
    enrolment_rate = AddressLimiter(config.limits.enrolments_per_address_per_minute)
    auth_failures = AddressLimiter(config.limits.failed_auth_per_address_per_minute)

    def refuse_guessers(request: Request) -> str:
        """The source address, unless it spent its failed-authentication budget (then 429)."""
        address = _source(request, config)
        wait = auth_failures.wait(address)
        if wait is not None:
            raise Rejected(429, "rate_limited", [{"field": "(client)", "message": (
                f"too many failed authentications from {address}; try again in {math.ceil(wait)} s")}], retry_after=wait)
        return address

    async def device_of(request: Request) -> str:
        # A valid device token passes even from an address that spent its failed-auth budget: tokens
        # are 256-bit random (guessing is hopeless), and a guesser behind an office NAT must not
        # silence every agent behind it. Wrong tokens spend the budget, then get 429.
        token = _bearer(request)
        device = await run_in_threadpool(storage.device_of_token, token) if token else None
        if device is None:
            address = refuse_guessers(request)
            auth_failures.spend(address)
            raise Rejected(401, "unauthorized", [{"field": "Authorization", "message": "unknown, revoked or missing device token"}])
        return device

    reporting_tokens = TokenMemory()  # admission.py: the write re-checks the token at its commit
    spent_quotas = SpentQuotas()

    async def reporting_device(request: Request) -> tuple[str, str]:
        """The device of a report's token and the token's digest, remembered for a while (admission.TokenMemory)."""
        token = _bearer(request)
        hashed = token_digest(token) if token else ""
        device = reporting_tokens.device(hashed) if token else None
        if device is None:
            device = await device_of(request)
            reporting_tokens.remember(hashed, device)
        return device, hashed

    def require_analyst(request: Request) -> None:
        address = refuse_guessers(request)
        token = _bearer(request) or ""
        if not hmac.compare_digest(token.encode(), config.analyst_token.encode()):
            auth_failures.spend(address)
            raise Rejected(401, "unauthorized", [{"field": "Authorization", "message": "analyst token required"}])

    @app.exception_handler(Rejected)
    async def _refused(_request: Request, refused: Rejected) -> JSONResponse:
        headers = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": "30"}}.get(refused.status)
        if refused.retry_after is not None:
            headers = {"Retry-After": str(max(1, math.ceil(refused.retry_after)))}
        return JSONResponse({"errors": refused.errors}, status_code=refused.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def _http_refusal(_request: Request, refused: HTTPException) -> JSONResponse:
        # Starlette's own 404 (no such route) and 405 (wrong method) in the documented error body.
        field = "(method)" if refused.status_code == 405 else "(path)"
        errors = [{"field": field, "message": str(refused.detail)}]
        return JSONResponse({"errors": errors}, status_code=refused.status_code, headers=refused.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, invalid: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(part) for part in item["loc"]), "message": item["msg"]} for item in invalid.errors()]
        return JSONResponse({"errors": errors}, status_code=422)

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def _store_failed(request: Request, failure: sa.exc.SQLAlchemyError) -> JSONResponse:
        if not unavailable(failure):
            return await _failed(request, failure)
        log.warning("store refused %s %s: %s", request.method, request.url.path, str(failure).splitlines()[0])
        return await _refused(request, store_refusal(failure))

    @app.exception_handler(Exception)
    async def _failed(_request: Request, _failure: Exception) -> JSONResponse:
        # The traceback goes to the server log (Starlette re-raises after this handler answers).
        message = "internal error; the collector log has the details"
        return JSONResponse({"errors": [{"field": "(server)", "message": message}]}, status_code=500)

    @app.post("/api/v1/enroll")
    async def enroll(request: Request) -> dict[str, Any]:
        try:
            address = refuse_guessers(request)
            wait = enrolment_rate.spend(address)
            if wait is not None:
                raise Rejected(429, "rate_limited", [{"field": "(client)", "message": (
                    f"too many enrolments from {address}; try again in {math.ceil(wait)} s")}], retry_after=wait)
            asked = _parse(EnrolRequest, await _small_body(request))
            if not _enrol_secret_accepted(asked.enroll_secret, config, clock()):
                auth_failures.spend(address)
                raise Rejected(401, "unauthorized", [{"field": "enroll_secret", "message": "wrong enrol secret"}])
        except Rejected as refused:
            metrics.enrolments.labels("rate_limited" if refused.status == 429 else "refused").inc()
            raise
        token = secrets.token_urlsafe(32)
        done = await run_in_threadpool(
            lambda: storage.enrol(
                hardware_id=asked.hardware_id,
                hostname=asked.hostname,
                source_ip=_source(request, config),
                new_device_id=f"dev-{secrets.token_hex(6)}",
                token=token,
                now=clock(),
            )
        )
        metrics.enrolments.labels("renewal" if done.renewal else "new").inc()
        # Its first report needs no token query: a renewal revoked the device's other tokens.
        reporting_tokens.forget_device(done.device_id)
        reporting_tokens.remember(token_digest(token), done.device_id)
        return {"device_id": done.device_id, "token": token, "next_seq": done.next_seq}

    @app.post("/api/v1/token")
    async def rotate_token(request: Request) -> dict[str, Any]:
        """A fresh token for the calling device; the one it called with (and any other) stops working."""
        device = await device_of(request)
        token = secrets.token_urlsafe(32)
        await run_in_threadpool(storage.rotate_token, device, token, clock())
        reporting_tokens.forget_device(device)
        reporting_tokens.remember(token_digest(token), device)
        log.info("device %s rotated its token", device)
        return {"device_id": device, "token": token}

    async def post_report(request: Request) -> Response:
        """``POST /api/v1/reports``: store one report (202), or refuse it naming the field (4xx) or the store (503)."""
        started = time.perf_counter()
        try:
            return JSONResponse(await _ingest(request, *await reporting_device(request)), status_code=202)
        except Rejected as refused:
            metrics.reports_rejected.labels(refused.reason).inc()
            raise
        finally:
            metrics.ingest_latency.observe(time.perf_counter() - started)

    async def _ingest(request: Request, device: str, token_sha256: str) -> dict[str, int]:
        # A device whose quota a commit here found spent is refused before its body is read or parsed.
        wait = spent_quotas.wait(device, clock())
        if wait is not None:
            raise _over_quota(wait)
        body = await ingest.read_body(
            request.stream(),
            limit=config.max_report_bytes,
            declared_length=request.headers.get("content-length"),
            encoding=request.headers.get("content-encoding"),
        )
        received_at = clock()
        source_ip = _source(request, config)
        received = ingest.Received(body, received_at, received_at + timedelta(seconds=config.limits.max_clock_skew_seconds),
                                   device, source_ip, geo.lookup(source_ip), config.limits, token_sha256)
        try:
            stored, seq = await writes.write_report(received)
        except sa.exc.SQLAlchemyError as failure:
            if not unavailable(failure):
                raise
            raise store_refusal(failure) from None
        store_health.wrote()
        if stored.revoked:
            reporting_tokens.forget_device(device)
            raise Rejected(401, "unauthorized", [{"field": "Authorization", "message": "unknown, revoked or missing device token"}])
        if stored.new or stored.retry_after is not None:
            spent_quotas.spent(device, received_at, stored.next_wait if stored.new else stored.retry_after)
        if stored.retry_after is not None:
            raise _over_quota(stored.retry_after)
        if stored.conflict:
            raise Rejected(409, "conflict", [{"field": "seq", "message": f"seq {seq} is already stored with different content"}])
        metrics.reports_accepted.labels("new" if stored.new else "resend").inc()
        return {"accepted": seq}

    # The busiest route is served ahead of the middleware stack (direct_route.py), and is a plain
    # Starlette route in the table for its other methods' 405: FastAPI's per-request work for an
    # APIRoute (dependency solving, response serialization) was a third of the GIL time of a report,
    # the middleware layers a fifth of the rest (py-spy --gil, issue 13). It reads and validates its
    # body itself; refusals are answered by the exception handlers above either way, and the OpenAPI
    # document still describes it (below).
    app.router.routes.insert(0, Route(REPORTS_PATH, post_report, methods=["POST"]))
    serve_ahead(app, "POST", REPORTS_PATH, post_report)

    @app.get("/api/v1/config")
    async def agent_config(request: Request) -> dict[str, Any]:
        await device_of(request)
        anchors = await run_in_threadpool(storage.anchors)
        return {
            "anchors": [to_wire(anchor) for anchor in anchors],
            "interval_seconds": config.agent_interval_seconds,
            "probe_options": config.probe_options,
        }

    @app.get("/api/v1/devices")
    async def list_devices(request: Request) -> list[dict[str, Any]]:
        require_analyst(request)
        fresh = await run_in_threadpool(scorer.refresh)
        rows = await run_in_threadpool(storage.device_summaries)
        stale = set() if fresh else await run_in_threadpool(scorer.stale_devices)
        return [
            {**row, "last_seen": _wire_time(row["last_seen"]), "stale": row["device_id"] in stale} for row in rows
        ]

    @app.get("/api/v1/devices/{device_id}")
    async def show_device(device_id: str, request: Request) -> dict[str, Any]:
        require_analyst(request)
        return await _verdict_of(device_id)

    @app.post("/api/v1/verify")
    async def verify(request: Request) -> dict[str, Any]:
        device = await device_of(request)
        asked = _parse(VerifyRequest, await _small_body(request))
        verdict = await _verdict_of(device)
        await run_in_threadpool(console.record_verification, verdict, asked.seconds, clock())  # the Onboarding page
        return {**_verdict_only(verdict, config), "observed_seconds": asked.seconds}

    async def _verdict_of(device_id: str) -> dict[str, Any]:
        if len(device_id) > 128 or "\x00" in device_id:  # no device has such an id (and PostgreSQL refuses NUL)
            raise Rejected(404, "not_found", [{"field": "device_id", "message": "no device has this id"}])
        fresh = await run_in_threadpool(scorer.refresh, device_id)
        verdict = await run_in_threadpool(storage.verdict, device_id)
        if verdict is None:
            if not fresh:
                raise Rejected(503, "scoring", [{"field": "device_id", "message": (
                    f"the first verdict of {device_id!r} is still being computed; ask again in a minute")}])
            known = await run_in_threadpool(storage.device_exists, device_id)
            why = "has sent no report yet" if known else "is not enrolled"
            raise Rejected(404, "not_found", [{"field": "device_id", "message": f"{device_id!r} {why}"}])
        history = await run_in_threadpool(storage.enrolment_history, device_id)
        enrolments = [{**item, "enrolled_at": _wire_time(item["enrolled_at"])} for item in history]
        return {**to_wire(verdict), "stale": not fresh, "enrolments": enrolments}

    @app.get("/healthz")
    async def healthz() -> Response:
        full_since = store_health.full_since()
        if full_since is not None:
            problem = f"the database refused writes for lack of space since {_wire_time(full_since)}; free space on its disk"
            return JSONResponse({"status": "degraded", "problem": problem}, status_code=503,
                                headers={"Retry-After": str(int(RETRY_AFTER_SECONDS))})
        if isinstance(writes, WriterProcess) and not writes.running:
            problem = ("the report writer process ended and is being started again "
                       "(farmwatch_writer_restarts_total); reports are answered 503 until it runs")
            return JSONResponse({"status": "degraded", "problem": problem}, status_code=503,
                                headers={"Retry-After": str(int(RESTART_SECONDS))})
        if await run_in_threadpool(storage.ping):
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "the store does not answer"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        text = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    documented_report_route = APIRoute(REPORTS_PATH, post_report, methods=["POST"], status_code=202)
    app.openapi = lambda: openapi_document(  # type: ignore[method-assign]
        app,
        extra_routes=[documented_report_route],
        bodies={("/api/v1/enroll", "post"): EnrolRequest, ("/api/v1/reports", "post"): Report,
                ("/api/v1/verify", "post"): VerifyRequest},
        refusals=REFUSALS,
    )
    return app


# What each operation may refuse with (the OpenAPI document lists these with the error body).
REFUSALS: dict[tuple[str, str], tuple[int, ...]] = {
    ("/api/v1/enroll", "post"): (401, 413, 415, 422, 429),
    ("/api/v1/reports", "post"): (401, 403, 409, 413, 415, 422, 429, 503),
    ("/api/v1/config", "get"): (401, 429),
    ("/api/v1/token", "post"): (401, 429, 503),
    ("/api/v1/devices", "get"): (401, 429),
    ("/api/v1/devices/{device_id}", "get"): (401, 404, 429, 503),
    ("/api/v1/verify", "post"): (401, 404, 413, 415, 422, 429, 503),
    ("/healthz", "get"): (503,),
}


def _enrol_secret_accepted(given: str, config: CollectorConfig, now: datetime) -> bool:
    """The current enrol secret, or the previous one until its overlap ends ([collector] previous_enroll_secret_*)."""
    if hmac.compare_digest(given.encode(), config.enroll_secret.encode()):
        return True
    previous, until = config.previous_enroll_secret, config.previous_enroll_secret_until
    if previous is None or until is None or now >= until:
        return False
    if not hmac.compare_digest(given.encode(), previous.encode()):
        return False
    log.warning("an agent enrolled with the previous enrol secret, accepted until %s; hand it the new one", _wire_time(until))
    return True


def _over_quota(wait: float) -> Rejected:
    message = (f"this device's report quota ([limits] reports_per_device_per_hour, report_bytes_per_device_per_day) "
               f"is spent; try again in {math.ceil(wait)} s")
    return Rejected(429, "quota", [{"field": "(device)", "message": message}], retry_after=wait)


def _verdict_only(answer: dict[str, Any], config: CollectorConfig) -> dict[str, Any]:
    """What a device token may read of its own verdict: the label, not the reasons.

    A farm operator holds the device token; findings (and an exact risk) would show them which
    evasion works. ``risk`` is the lower bound of the label's band, so the answer still parses as a
    verdict (``farmwatch-agent verify`` reads it); analysts read the reasons at /api/v1/devices/{id}."""
    bands = {"clear": 0.0, "review": config.detection.review_threshold, "farm": config.detection.farm_threshold}
    kept = {key: answer[key] for key in ("device_id", "employee_id", "scored_at", "verdict", "stale")}
    return {**kept, "risk": bands[answer["verdict"]], "findings": [], "findings_withheld": True}


async def _small_body(request: Request) -> bytes:
    return await ingest.read_body(
        request.stream(),
        limit=SMALL_BODY,
        declared_length=request.headers.get("content-length"),
        encoding=request.headers.get("content-encoding"),
    )


def _parse(model: type[EnrolRequest] | type[VerifyRequest], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as invalid:
        raise Rejected(422, "invalid", field_errors(invalid)) from None


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _source(request: Request, config: CollectorConfig) -> str:
    peer = request.client.host if request.client else None
    return ingest.source_address(peer, request.headers.get("x-forwarded-for"), config.trusted_proxies)


def _wire_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _safe_count(storage: Storage) -> float:
    try:
        return float(storage.device_count())
    except Exception:  # noqa: BLE001 - /metrics must answer even while the store is down
        return float("nan")
