"""Console sign-in through the company's OpenID Connect provider (``[console.oidc]``), beside passwords.

The authorization code flow with PKCE (S256), ``state`` and ``nonce``; authlib's OpenID client does
the protocol (discovery, the code exchange, the ID token's signature against the provider's JWKS,
its issuer, audience, expiry and nonce, and the UserInfo request when the ID token lacks the claim).
What a sign-in in progress must remember (state, nonce, code verifier, the page to return to)
travels in an HttpOnly cookie scoped to ``/console/oidc`` for ten minutes, so any replica can finish it.

Who may sign in is decided here, not at the provider: the person's ``claim`` (default ``email``,
which must then be ``email_verified``) is looked up in ``analysts``, a table mapping claim values to
analyst accounts made with ``farmwatch-collector analysts add``. Nobody is provisioned
automatically: a person the table does not name, or whose analyst account was removed, is refused,
and the refusal is audited. Removing an analyst therefore ends their OIDC access too.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.starlette_client import OAuth
from joserfc.errors import JoseError

from farmwatch.collector.console.accounts import NAME
from farmwatch.errors import FarmwatchError

CALLBACK_PATH = "/console/oidc/callback"
PENDING_SECONDS = 600  # how long the provider's sign-in page may take
KEYS = {"issuer", "client_id", "client_secret_file", "claim", "scopes", "analysts"}


class OidcConfigError(FarmwatchError, ValueError):
    """A bad ``[console.oidc]`` table; the message names the key."""


class OidcRefused(FarmwatchError):
    """A sign-in that did not prove who is there; ``status`` is the HTTP status the page answers with."""

    def __init__(self, status: int, message: str, who: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.who = who  # the claim value, when the provider vouched for one


@dataclass(frozen=True)
class OidcSettings:
    """``[console.oidc]``: the provider, this collector's client there, and who maps to which analyst."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    claim: str = "email"
    scopes: tuple[str, ...] = ("openid", "email")
    analysts: Mapping[str, str] = field(default_factory=dict)  # claim value -> analyst account name


def parse_settings(table: Any, where: str) -> OidcSettings:
    """:class:`OidcSettings` from the ``[console.oidc]`` table, every key checked by name and shape."""
    if not isinstance(table, dict):
        raise OidcConfigError(f"{where}: must be a table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise OidcConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    missing = sorted({"issuer", "client_id", "client_secret_file", "analysts"} - set(table))
    if missing:
        raise OidcConfigError(f"{where}: missing {', '.join(missing)}")
    issuer = _issuer(table["issuer"], f"{where} issuer")
    client_id = table["client_id"]
    if not isinstance(client_id, str) or not client_id.strip():
        raise OidcConfigError(f"{where} client_id: must be the client id the provider gave this collector")
    claim = table.get("claim", "email")
    if not isinstance(claim, str) or not claim:
        raise OidcConfigError(f"{where} claim: must name an ID token or UserInfo claim, e.g. email")
    scopes = table.get("scopes", ["openid", "email"])
    if not isinstance(scopes, list) or "openid" not in scopes or not all(isinstance(s, str) and s for s in scopes):
        raise OidcConfigError(f"{where} scopes: must be a list of scope names including openid, got {scopes!r}")
    analysts = table["analysts"]
    if not isinstance(analysts, dict) or not analysts:
        raise OidcConfigError(f"{where} analysts: must map {claim} values to analyst names, e.g. "
                              '{ "alice@example.com" = "alice" }')
    for value, name in analysts.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise OidcConfigError(f"{where} analysts: {value!r} maps to {name!r}, which is not an analyst name")
    return OidcSettings(issuer=issuer, client_id=client_id, client_secret=_secret(table["client_secret_file"], where),
                        claim=claim, scopes=tuple(scopes), analysts=dict(analysts))


def _issuer(value: Any, where: str) -> str:
    """An https URL; http only for a provider on this machine (loopback), as in tests and demos."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or not parts.hostname or parts.query or parts.fragment:
        raise OidcConfigError(f"{where}: must be the provider's issuer URL, got {value!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
        raise OidcConfigError(f"{where}: must be https:// (http:// only for a provider on loopback), got {value!r}")
    return str(value).rstrip("/")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise OidcConfigError(f"{where} client_secret_file: must be the path of a file holding the client secret")
    try:
        secret = Path(value).read_text(encoding="utf-8").strip()
    except OSError as failure:
        raise OidcConfigError(f"{where} client_secret_file: cannot read {value}: {failure.strerror or failure}") from None
    if not secret:
        raise OidcConfigError(f"{where} client_secret_file: {value} is empty")
    return secret


@dataclass(frozen=True)
class Identity:
    """Who the provider vouched for, and the analyst account that person maps to (None: nobody)."""

    subject: str
    claim_value: str
    analyst: str | None


class OidcSignIn:
    """The two halves of one sign-in: :meth:`start` (where to send the browser, what to remember) and
    :meth:`finish` (the provider's answer checked, the person identified and mapped)."""

    def __init__(self, settings: OidcSettings, public_url: str) -> None:
        self.settings = settings
        self.redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
        self.client = OAuth().register(
            "farmwatch", client_id=settings.client_id, client_secret=settings.client_secret,
            server_metadata_url=settings.issuer + "/.well-known/openid-configuration",
            client_kwargs={"scope": " ".join(settings.scopes), "code_challenge_method": "S256"},
        )

    async def start(self, next_page: str) -> tuple[str, str]:
        """The provider's authorization URL and the cookie value remembering this attempt."""
        try:
            await self._metadata()
            made = await self.client.create_authorization_url(self.redirect_uri)
        except (AuthlibBaseError, httpx2.HTTPError, OSError, ValueError, RuntimeError) as failure:
            raise OidcRefused(502, f"The sign-in provider {self.settings.issuer} could not be reached: {failure}") from None
        pending = {key: made[key] for key in ("state", "nonce", "code_verifier")} | {"next": next_page}
        return made["url"], base64.urlsafe_b64encode(json.dumps(pending).encode()).decode()

    @staticmethod
    def pending_next(cookie: str | None) -> str | None:
        """The console page the attempt in ``cookie`` started from."""
        pending = _pending(cookie)
        return str(pending["next"]) if pending else None

    async def finish(self, params: Mapping[str, str], cookie: str | None) -> Identity:
        """Check the provider's redirect against the remembered attempt; who signed in. Raises OidcRefused."""
        if "error" in params:
            raise OidcRefused(403, f"The sign-in provider refused: {params['error']}"
                              + (f" ({params['error_description']})" if params.get("error_description") else ""))
        pending = _pending(cookie)
        if pending is None:
            raise OidcRefused(400, "This sign-in was not started here or took longer than 10 minutes; start again.")
        if not hmac.compare_digest(params.get("state", "").encode(), str(pending["state"]).encode()):
            raise OidcRefused(400, "state: does not match the sign-in this browser started; start again.")
        if "iss" in params and params["iss"] != self.settings.issuer:  # RFC 9207: the answer is from our provider
            raise OidcRefused(400, f"iss: the answer came from {params['iss']!r}, not {self.settings.issuer!r}.")
        if not params.get("code"):
            raise OidcRefused(400, "code: the provider sent no authorization code.")
        try:
            await self._metadata()
        except (AuthlibBaseError, httpx2.HTTPError, OSError, ValueError, RuntimeError) as failure:
            raise OidcRefused(502, f"The sign-in provider {self.settings.issuer} could not be reached: {failure}") from None
        try:
            token = await self.client.fetch_access_token(redirect_uri=self.redirect_uri, code=params["code"],
                                                         code_verifier=pending["code_verifier"])
            claims = dict(await self.client.parse_id_token(
                token, nonce=pending["nonce"], claims_options={"iss": {"essential": True, "value": self.settings.issuer}}))
            if self.settings.claim not in claims:
                extra = dict(await self.client.userinfo(token=token))
                if extra.get("sub") != claims.get("sub"):  # OIDC Core 5.3.2: UserInfo must be about the same person
                    raise OidcRefused(403, "The provider's UserInfo is about someone else than its ID token.")
                claims = {**extra, **claims}
        except (AuthlibBaseError, JoseError, httpx2.HTTPError, OSError, ValueError, KeyError, RuntimeError) as failure:
            raise OidcRefused(403, f"The sign-in provider's answer did not check out: {failure}") from None
        value = claims.get(self.settings.claim)
        if not isinstance(value, str) or not value:
            raise OidcRefused(403, f"The provider did not give the {self.settings.claim!r} claim this console maps.")
        if self.settings.claim == "email" and claims.get("email_verified") is not True:
            raise OidcRefused(403, f"The provider has not verified the email address {value}.", who=value)
        return Identity(str(claims["sub"]), value, self.settings.analysts.get(value))

    async def _metadata(self) -> None:
        """Discovery, checked: the document must name the configured issuer (OIDC Discovery 4.3)."""
        metadata = await self.client.load_server_metadata()
        if metadata.get("issuer") != self.settings.issuer:
            raise ValueError(f"its discovery document names issuer {metadata.get('issuer')!r}")


def _pending(cookie: str | None) -> dict[str, Any] | None:
    if not cookie:
        return None
    try:
        pending = json.loads(base64.urlsafe_b64decode(cookie.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    wanted = ("state", "nonce", "code_verifier", "next")
    if not isinstance(pending, dict) or not all(isinstance(pending.get(key), str) for key in wanted):
        return None
    return pending
