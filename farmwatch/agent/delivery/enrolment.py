"""Enrolment and configuration: how the agent gets and keeps its device identity.

Like osquery's TLS enrolment: the company's enrol secret is presented once (``POST
/api/v1/enroll``) for a per-device token; a token the collector no longer accepts (401) leads to
one re-enrolment. The collector returns the same device id for the same ``hardware_id`` and the
``next_seq`` it expects, so a reinstalled agent resumes its sequence. ``GET /api/v1/config``
(anchors, probe options, interval) is read after enrolment and then at most once an hour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from farmwatch.agent.errors import AgentError, CollectorRefused, CollectorUnavailable
from farmwatch.contract import INT_LIMIT, Anchor

from .http_client import TRANSPORT_ERRORS, CollectorClient, Response
from .state import Identity, StateDir

log = logging.getLogger(__name__)

CONFIG_REFRESH_SECONDS = 3600.0


def call(http: CollectorClient, method: str, path: str, **kwargs: Any) -> Response:
    """One request; an unreachable collector, a 5xx or a 429 answer raises :class:`CollectorUnavailable`
    (with the Retry-After the collector sent)."""
    try:
        response = http.request(method, path, **kwargs)
    except TRANSPORT_ERRORS as failed:
        reason = f"{type(failed).__name__}: {failed}"
        raise CollectorUnavailable(f"collector at {http.base_url} unreachable ({reason})") from failed
    if response.status_code >= 500 or response.status_code == 429:
        wait = "" if response.retry_after is None else f" (Retry-After: {response.retry_after:g} s)"
        raise CollectorUnavailable(
            f"collector at {http.base_url} answered {response.status_code} to {method} {path}{wait}",
            response.status_code, response.retry_after,
        )
    return response


@dataclass(frozen=True)
class AgentConfig:
    """What the collector tells its agents (``GET /api/v1/config``)."""

    anchors: list[Anchor] = field(default_factory=list)
    interval_seconds: float | None = None
    probe_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> AgentConfig:
        """Validate the collector's answer; raises :class:`AgentError` naming the bad field."""
        try:
            return cls(
                anchors=[Anchor.model_validate(a, strict=False) for a in data.get("anchors", [])],
                interval_seconds=data.get("interval_seconds"),
                probe_options=dict(data.get("probe_options") or {}),
            )
        except (ValidationError, AttributeError, TypeError) as bad:
            raise AgentError(f"the collector's /api/v1/config answer is malformed: {bad}") from bad


class Enrolment:
    """Keeps this agent enrolled with one collector, its identity stored in the state dir."""

    def __init__(
        self,
        http: CollectorClient,
        state: StateDir,
        enroll_secret: str,
        hostname: str,
        hardware_id: str,
        clock: Callable[[], float],
    ) -> None:
        self.http = http
        self.state = state
        self._secret = enroll_secret
        self._hostname = hostname
        self._hardware_id = hardware_id
        self._clock = clock
        self._config_stale = False

    def identity(self) -> Identity:
        """The stored identity, enrolling first if there is none."""
        return self.state.identity or self.reenroll()

    def reenroll(self) -> Identity:
        """Present the enrol secret and store the identity the collector gives."""
        response = call(self.http, "POST", "/api/v1/enroll", json={
            "enroll_secret": self._secret, "hostname": self._hostname, "hardware_id": self._hardware_id,
        })
        if response.status_code in (401, 403):
            raise CollectorRefused(
                f"collector at {self.http.base_url} refused the enrol secret (HTTP {response.status_code}); "
                "check --enroll-secret-file"
            )
        if response.status_code != 200:
            raise AgentError(f"enrolment failed: HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
            identity = Identity(device_id=str(body["device_id"]), token=str(body["token"]))
            next_seq = int(body.get("next_seq", 1))
        except (ValueError, KeyError, TypeError) as bad:
            raise AgentError(f"enrolment answer is malformed: {response.text[:200]}") from bad
        self.state.save_identity(identity)
        if next_seq > INT_LIMIT:  # an older collector's overflow: seqs past the contract could never be sent
            log.warning("ignoring the collector's next_seq %d, past the contract's %d; keeping this agent's counter",
                        next_seq, INT_LIMIT)
        else:
            self.state.raise_seq_floor(next_seq)
        log.info("enrolled as device %s (next seq %d)", identity.device_id, next_seq)
        self._config_stale = True  # a (re-)enrolled device reads its config before reporting
        return identity

    def refresh_config(self, force: bool = False) -> AgentConfig:
        """The collector's config, fetched after enrolment, when forced or when older than an hour."""
        cached = self.state.config
        age = self._clock() - cached.get("fetched_at", float("-inf"))
        identity = self.state.identity
        if identity is None or not (force or self._config_stale or age >= CONFIG_REFRESH_SECONDS):
            return AgentConfig.parse(cached.get("config", {}))
        try:
            response = self._get_config(identity)
            if response.status_code == 401:
                response = self._get_config(self.reenroll())
            if response.status_code != 200:
                raise AgentError(f"HTTP {response.status_code}")
            config = AgentConfig.parse(response.json())
        except (AgentError, ValueError) as failed:
            # Reports still flow without fresh anchors; retry at the next refresh.
            log.warning("could not read the collector's config (%s); using the cached one", failed)
            return AgentConfig.parse(cached.get("config", {}))
        self.state.save_config({"fetched_at": self._clock(), "config": response.json()})
        self._config_stale = False
        return config

    def _get_config(self, identity: Identity) -> Response:
        return call(self.http, "GET", "/api/v1/config", headers=bearer(identity))


def bearer(identity: Identity) -> dict[str, str]:
    """The Authorization header carrying the device token."""
    return {"Authorization": f"Bearer {identity.token}"}
