"""The analyst console's pages under ``/console``: sign-in, fleet, device, cluster, onboarding.

Plain HTML forms and server-side SVG: every list and action works without JavaScript. A session
cookie (HttpOnly, SameSite=Lax, Secure under TLS) names the analyst; every POST must carry the
session's CSRF token (the sign-in form a token it set in its own cookie). Pages read the store and
the stored verdicts only; an action that changes scoring (a suppression) marks the device's verdict
stale and asks the scorer for a fresh one.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from farmwatch.collector import ingest
from farmwatch.collector.console import device_view
from farmwatch.collector.console.accounts import Accounts, ConsoleSession
from farmwatch.collector.console.oidc import CALLBACK_PATH, PENDING_SECONDS, OidcRefused, OidcSignIn
from farmwatch.collector.console.store import (
    MAX_SUPPRESSION_DAYS,
    NETWORK_KINDS,
    VERDICTS,
    ConsoleStore,
    FleetFilter,
)
from farmwatch.collector.ratelimit import AddressLimiter
from farmwatch.collector.scoring import Scorer
from farmwatch.collector.storage import Storage
from farmwatch.detectors.registry import REGISTRY
from farmwatch.errors import FarmwatchError

SESSION_COOKIE = "farmwatch_session"
LOGIN_COOKIE = "farmwatch_login_csrf"
OIDC_COOKIE = "farmwatch_oidc"  # an OIDC sign-in in progress (console/oidc.py)
FORM_LIMIT = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleRefusal(FarmwatchError):
    """A request the console refuses; rendered as a page with the status and one clear sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInNeeded(FarmwatchError):
    """No live session: pages redirect to the sign-in form."""


def detector_about(name: str) -> str:
    """The first line of a detector's docstring: what it looks for, in plain words."""
    kind = REGISTRY.get(name)
    return (kind.__doc__ or "").strip().splitlines()[0] if kind else ""


def mount_console(app: FastAPI, storage: Storage, scorer: Scorer, clock: Callable[[], datetime]) -> ConsoleStore:
    """Add the console's routes and static files to ``app``; returns its store (verify records there)."""
    store = ConsoleStore(storage.engine)
    accounts = Accounts(storage.engine)
    config = scorer.config
    # Wrong passwords spend the same per-address budget as wrong API tokens ([limits], per process).
    sign_in_failures = AddressLimiter(config.limits.failed_auth_per_address_per_minute)
    package = files("farmwatch.collector.console")
    templates = Jinja2Templates(directory=str(package / "templates"))
    templates.env.globals.update(detector_about=detector_about, verdicts=VERDICTS, network_kinds=NETWORK_KINDS,
                                 detector_names=sorted(REGISTRY), max_suppression_days=MAX_SUPPRESSION_DAYS,
                                 banner=config.console_banner, oidc_issuer=config.oidc.issuer if config.oidc else None)
    templates.env.filters["when"] = _when
    templates.env.filters["evidence"] = _evidence
    app.mount("/console/static", StaticFiles(directory=str(package / "static")), name="console-static")
    router = APIRouter(prefix="/console")

    def page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, values, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(ConsoleRefusal)
    async def _refused(request: Request, refusal: ConsoleRefusal) -> HTMLResponse:
        return page(request, "error.html", refusal.status, message=refusal.message, session=None)

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, _needed: SignInNeeded) -> Response:
        if request.method != "GET":
            return page(request, "error.html", 401, message="Your session has ended; sign in again.", session=None)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?{urlencode({'next': target})}", status_code=303)

    def _client_address(request: Request) -> str:
        peer = request.client.host if request.client else None
        return ingest.source_address(peer, request.headers.get("x-forwarded-for"), config.trusted_proxies)

    async def signed_in(request: Request) -> ConsoleSession:
        token = request.cookies.get(SESSION_COOKIE)
        session = await run_in_threadpool(accounts.session, token, clock()) if token else None
        if session is None:
            raise SignInNeeded()
        return session

    async def form_of(request: Request, session: ConsoleSession | None) -> dict[str, str]:
        """The posted form, after checking its CSRF token (the session's, or the sign-in cookie's)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise ConsoleRefusal(415, "Forms must be sent as application/x-www-form-urlencoded.")
        body = await ingest.read_body(request.stream(), limit=FORM_LIMIT,
                                      declared_length=request.headers.get("content-length"), encoding=None)
        try:
            fields = dict(reversed(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
        except (UnicodeDecodeError, ValueError):
            raise ConsoleRefusal(400, "The form is not valid UTF-8 form data.") from None
        for name, value in fields.items():
            if "\x00" in name or "\x00" in value:  # no store keeps NUL in text (PostgreSQL refuses it)
                raise ConsoleRefusal(422, f"{name.replace(chr(0), '')}: NUL characters are not allowed.")
        expected = session.csrf_token if session else request.cookies.get(LOGIN_COOKIE, "")
        sent = fields.get("csrf_token", "")
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise ConsoleRefusal(403, "csrf_token: missing or wrong; reload the page and try again.")
        return fields

    # --- signing in and out ---------------------------------------------------------------------

    @router.get("/")
    async def home() -> Response:
        return RedirectResponse("/console/fleet", status_code=303)

    @router.get("/login")
    async def login_form(request: Request, next: str = "/console/fleet") -> Response:
        token = secrets.token_urlsafe(32)
        response = page(request, "login.html", csrf_token=token, next=_local(next), error=None, session=None)
        _cookie(response, request, LOGIN_COOKIE, token, max_age=3600)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        fields = await form_of(request, None)
        name, password = fields.get("name", "").strip(), fields.get("password", "")
        target = _local(fields.get("next", "/console/fleet"))
        address = _client_address(request)
        wait = sign_in_failures.wait(address)
        if wait is not None:
            raise ConsoleRefusal(429, f"Too many failed sign-ins from {address}; try again in {math.ceil(wait)} s.")
        if not await run_in_threadpool(accounts.check_password, name, password):
            sign_in_failures.spend(address)
            await run_in_threadpool(store.audit, name[:64] or "(blank)", "sign_in_refused", clock())
            response: Response = page(request, "login.html", 401, csrf_token=request.cookies.get(LOGIN_COOKIE, ""),
                            next=target, error="Wrong name or password.", session=None)
            return response
        token = await run_in_threadpool(accounts.open_session, name, clock())
        await run_in_threadpool(store.audit, name, "sign_in", clock())
        response = RedirectResponse(target, status_code=303)
        _cookie(response, request, SESSION_COOKIE, token, max_age=12 * 3600)
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    if config.oidc is not None and config.public_url is not None:
        oidc = OidcSignIn(config.oidc, config.public_url)

        @router.get("/oidc/start")
        async def oidc_start(request: Request, next: str = "/console/fleet") -> Response:
            try:
                url, pending = await oidc.start(_local(next))
            except OidcRefused as refused:
                raise ConsoleRefusal(refused.status, refused.message) from None
            response = RedirectResponse(url, status_code=303)
            _cookie(response, request, OIDC_COOKIE, pending, max_age=PENDING_SECONDS, path="/console/oidc")
            return response

        @router.get(CALLBACK_PATH.removeprefix("/console"))
        async def oidc_callback(request: Request) -> Response:
            address = _client_address(request)
            wait = sign_in_failures.wait(address)
            if wait is not None:
                raise ConsoleRefusal(429, f"Too many failed sign-ins from {address}; try again in {math.ceil(wait)} s.")
            pending = request.cookies.get(OIDC_COOKIE)
            try:
                who = await oidc.finish(request.query_params, pending)
            except OidcRefused as refused:
                sign_in_failures.spend(address)
                await run_in_threadpool(store.audit, (refused.who or "(oidc)")[:64], "sign_in_refused", clock(),
                                        None, f"oidc {oidc.settings.issuer}: {refused.message}")
                raise ConsoleRefusal(refused.status, refused.message) from None
            known = who.analyst is not None and await run_in_threadpool(accounts.exists, who.analyst)
            if who.analyst is None or not known:
                sign_in_failures.spend(address)
                why = ("is not mapped to an analyst" if who.analyst is None
                       else f"maps to analyst {who.analyst!r}, who has no account")
                await run_in_threadpool(store.audit, who.claim_value[:64], "sign_in_refused", clock(), None,
                                        f"oidc {oidc.settings.issuer}: {who.claim_value} {why}")
                raise ConsoleRefusal(403, f"{who.claim_value} {why} on this console; ask an administrator.")
            token = await run_in_threadpool(accounts.open_session, who.analyst, clock())
            await run_in_threadpool(store.audit, who.analyst, "sign_in", clock(), None,
                                    f"oidc {oidc.settings.issuer}: {who.claim_value} (sub {who.subject})")
            response = RedirectResponse(_local(OidcSignIn.pending_next(pending) or "/console/fleet"), status_code=303)
            _cookie(response, request, SESSION_COOKIE, token, max_age=12 * 3600)
            response.delete_cookie(OIDC_COOKIE, path="/console/oidc")
            return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = await signed_in(request)
        await form_of(request, session)
        await run_in_threadpool(accounts.close_session, request.cookies[SESSION_COOKIE])
        await run_in_threadpool(store.audit, session.analyst, "sign_out", clock())
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/console")
        return response

    # --- the fleet ------------------------------------------------------------------------------

    @router.get("/fleet")
    async def fleet(request: Request) -> Response:
        session = await signed_in(request)
        wanted, page_number = _fleet_filter(request)
        listing = await run_in_threadpool(store.fleet, wanted, page_number, clock())
        counts = await run_in_threadpool(store.counts)
        query = {key: value for key, value in request.query_params.items() if key != "page" and value}
        return page(request, "fleet.html", session=session, listing=listing, counts=counts, wanted=wanted,
                    query=urlencode(query), now=clock())

    # --- one device -----------------------------------------------------------------------------

    @router.get("/devices/{device_id}")
    async def device(request: Request, device_id: str) -> Response:
        session = await signed_in(request)
        values = await run_in_threadpool(_device_page, device_id)
        await run_in_threadpool(store.audit, session.analyst, "view_device", clock(), device_id)
        return page(request, "device.html", session=session, **values)

    def _device_page(device_id: str) -> dict[str, Any]:
        now = clock()
        row = store.device(_known_shape(device_id))
        if row is None:
            raise ConsoleRefusal(404, f"No enrolled device {device_id!r}.")
        records = storage.device_records(device_id, since=now - timedelta(hours=scorer.config.lookback_hours))
        entry = store.roster_entries([device_id]).get(device_id)
        identities = device_view.network_identities(records)
        members = store.cluster_members(row["cluster"]) if row["cluster"] else []
        return {
            "device": row, "verdict": storage.verdict(device_id), "entry": entry, "records": len(records),
            "heatmaps": device_view.heatmaps(records, entry.timezone if entry else None),
            "distance": device_view.distance_picture(records, entry, storage.anchors()),
            "timeline": device_view.remote_timeline(records),
            "hardware": device_view.hardware(records),
            "identities": sorted(identities.values(), key=lambda item: (-len(item.hours), item.kind)),
            "neighbours": [member for member in members if member != device_id],
            "enrolments": storage.enrolment_history(device_id),
            "actions": store.actions(device_id, now),
            "audit": store.audit_entries(device_id=device_id, limit=20),
            "lookback_hours": scorer.config.lookback_hours, "now": now,
        }

    @router.post("/devices/{device_id}/acknowledge")
    async def acknowledge(request: Request, device_id: str) -> Response:
        session = await signed_in(request)
        device_id = _known_shape(device_id)
        await form_of(request, session)
        verdict = await run_in_threadpool(storage.verdict, device_id)
        if verdict is None:
            raise ConsoleRefusal(404, f"{device_id!r} has no verdict to acknowledge.")
        await run_in_threadpool(store.acknowledge, device_id, session.analyst, verdict, clock())
        return RedirectResponse(f"/console/devices/{device_id}#actions", status_code=303)

    @router.post("/devices/{device_id}/suppress")
    async def suppress(request: Request, device_id: str) -> Response:
        session = await signed_in(request)
        device_id = _known_shape(device_id)
        fields = await form_of(request, session)
        detector, reason = fields.get("detector", ""), fields.get("reason", "").strip()
        if detector not in REGISTRY:
            raise ConsoleRefusal(422, f"detector: {detector!r} is not a detector (known: {', '.join(sorted(REGISTRY))}).")
        if not 3 <= len(reason) <= 1000:
            raise ConsoleRefusal(422, "reason: say in 3 to 1000 characters why this is a false positive.")
        days = _whole(fields.get("days", ""), "days", 1, MAX_SUPPRESSION_DAYS)
        if not await run_in_threadpool(storage.device_exists, device_id):
            raise ConsoleRefusal(404, f"No enrolled device {device_id!r}.")
        await run_in_threadpool(store.suppress, device_id, detector, reason, days, session.analyst, clock())
        await _rescore(device_id)
        return RedirectResponse(f"/console/devices/{device_id}#actions", status_code=303)

    @router.post("/devices/{device_id}/lift")
    async def lift(request: Request, device_id: str) -> Response:
        session = await signed_in(request)
        device_id = _known_shape(device_id)
        fields = await form_of(request, session)
        suppression = _whole(fields.get("suppression_id", ""), "suppression_id", 1, 2**62)
        if not await run_in_threadpool(store.lift, suppression, device_id, session.analyst, clock()):
            raise ConsoleRefusal(404, f"suppression_id: {suppression} is not a live suppression of {device_id!r}.")
        await _rescore(device_id)
        return RedirectResponse(f"/console/devices/{device_id}#actions", status_code=303)

    @router.post("/devices/{device_id}/note")
    async def note(request: Request, device_id: str) -> Response:
        session = await signed_in(request)
        device_id = _known_shape(device_id)
        fields = await form_of(request, session)
        text = fields.get("text", "").strip()
        if not 1 <= len(text) <= 4000:
            raise ConsoleRefusal(422, "text: a note needs 1 to 4000 characters.")
        if not await run_in_threadpool(storage.device_exists, device_id):
            raise ConsoleRefusal(404, f"No enrolled device {device_id!r}.")
        await run_in_threadpool(store.annotate, device_id, text, session.analyst, clock())
        return RedirectResponse(f"/console/devices/{device_id}#actions", status_code=303)

    async def _rescore(device_id: str) -> None:
        await run_in_threadpool(storage.mark_stale, device_id)
        await run_in_threadpool(scorer.refresh, device_id)

    # --- a co-location cluster ------------------------------------------------------------------

    @router.get("/clusters/{cluster_id}")
    async def cluster(request: Request, cluster_id: str) -> Response:
        session = await signed_in(request)
        values = await run_in_threadpool(_cluster_page, cluster_id)
        await run_in_threadpool(store.audit, session.analyst, "view_cluster", clock(), cluster_id)
        return page(request, "cluster.html", session=session, **values)

    def _cluster_page(cluster_id: str) -> dict[str, Any]:
        members = store.cluster_members(_known_shape(cluster_id))
        if not members:
            raise ConsoleRefusal(404, f"No co-location cluster {cluster_id!r} in the current verdicts.")
        since = clock() - timedelta(hours=scorer.config.lookback_hours)
        entries = store.roster_entries(members)
        seen = {member: device_view.network_identities(storage.device_records(member, since)) for member in members}
        shared = []
        for key in sorted({key for found in seen.values() for key in found}):
            on = {member: found[key].hours for member, found in seen.items() if key in found}
            if len(on) < 2:
                continue
            together = {hour for member, hours in on.items()
                        for hour in hours if any(hour in other for name, other in on.items() if name != member)}
            shared.append({"kind": key[0], "value": key[1], "devices": sorted(on), "hours_together": len(together)})
        verdicts = {member: storage.verdict(member) for member in members}
        return {"cluster_id": cluster_id, "members": members, "entries": entries, "verdicts": verdicts,
                "shared": sorted(shared, key=lambda item: -item["hours_together"]),
                "lookback_hours": scorer.config.lookback_hours}

    # --- onboarding -----------------------------------------------------------------------------

    @router.get("/onboarding")
    async def onboarding(request: Request) -> Response:
        session = await signed_in(request)
        checks = await run_in_threadpool(store.verifications)
        return page(request, "onboarding.html", session=session, checks=checks)

    @router.get("/onboarding/{check_id}")
    async def onboarding_record(request: Request, check_id: str) -> Response:
        session = await signed_in(request)
        check = await run_in_threadpool(store.verification, _whole(check_id, "check_id", 1, 2**62))
        if check is None:
            raise ConsoleRefusal(404, f"No onboarding check number {check_id}.")
        await run_in_threadpool(store.audit, session.analyst, "view_onboarding", clock(), check["device_id"])
        return page(request, "verification.html", session=session, check=check)

    app.include_router(router)
    return store


def _fleet_filter(request: Request) -> tuple[FleetFilter, int]:
    """The fleet page's query string, checked field by field (422 naming the field)."""
    query = request.query_params
    verdict = query.get("verdict") or None
    if verdict is not None and verdict not in VERDICTS:
        raise ConsoleRefusal(422, f"verdict: {verdict!r} is not one of {', '.join(VERDICTS)}.")
    detector = query.get("detector") or None
    if detector is not None and detector not in REGISTRY:
        raise ConsoleRefusal(422, f"detector: {detector!r} is not a detector.")
    network = query.get("network") or None
    if network is not None and network not in NETWORK_KINDS:
        raise ConsoleRefusal(422, f"network: {network!r} is not one of {', '.join(NETWORK_KINDS)}.")
    silent = query.get("silent_days") or None
    search = (query.get("q") or "").strip() or None
    if search is not None and (len(search) > 128 or "\x00" in search):
        raise ConsoleRefusal(422, "q: search for at most 128 characters, without NUL.")
    wanted = FleetFilter(verdict, detector, network, _whole(silent, "silent_days", 0, 3650) if silent else None, search)
    return wanted, _whole(query.get("page") or "1", "page", 1, 10**9)


def _known_shape(device_id: str) -> str:
    """A device id as the store holds them; any other shape is no device (404, never a store error)."""
    if len(device_id) > 128 or "\x00" in device_id:
        raise ConsoleRefusal(404, "No enrolled device has this id.")
    return device_id


def _whole(text: str, name: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConsoleRefusal(422, f"{name}: {text!r} is not a whole number.") from None
    if not low <= value <= high:
        raise ConsoleRefusal(422, f"{name}: must be from {low} to {high}, got {value}.")
    return value


def _local(target: str) -> str:
    """Only console paths are followed after sign-in (no open redirect)."""
    return target if target.startswith("/console/") and not target.startswith("//") else "/console/fleet"


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int, path: str = "/console") -> None:
    response.set_cookie(name, value, max_age=max_age, path=path, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "never"
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _evidence(value: Any) -> str:
    """Evidence values as short plain text (lists joined, nested objects as key=value)."""
    if isinstance(value, dict):
        return ", ".join(f"{key}={_evidence(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_evidence(item) for item in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)
