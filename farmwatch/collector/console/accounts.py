"""Analyst accounts and console sessions.

Passwords are hashed with argon2id (RFC 9106; argon2-cffi's defaults follow its second recommended
profile), so a stolen database costs an attacker memory-hard work per guess. A session cookie is a
random token whose SHA-256 alone is stored (like device tokens); each session carries its own CSRF
token, checked on every form the console accepts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine

from farmwatch.collector.tables import analysts, console_sessions
from farmwatch.errors import FarmwatchError

SESSION_HOURS = 12
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 12
_HASHER = PasswordHasher()  # argon2id
# Checked when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class AccountError(FarmwatchError, ValueError):
    """A refused account change; the message says why."""


@dataclass(frozen=True)
class ConsoleSession:
    analyst: str
    csrf_token: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Analyst accounts and their sessions in the collector's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(write=True)

    def add(self, name: str, password: str, now: datetime) -> None:
        """Create analyst ``name``; AccountError for a bad name, a short password or a taken name."""
        if not NAME.match(name):
            raise AccountError(f"analyst name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
        try:
            with self._writer.begin() as tx:
                tx.execute(analysts.insert().values(name=name, password_hash=_HASHER.hash(password), created_at=now))
        except sa.exc.IntegrityError:
            raise AccountError(f"analyst {name!r} already exists") from None

    def remove(self, name: str) -> None:
        """Delete analyst ``name`` and end their sessions; AccountError when there is none."""
        with self._writer.begin() as tx:
            tx.execute(console_sessions.delete().where(console_sessions.c.analyst == name))
            if not tx.execute(analysts.delete().where(analysts.c.name == name)).rowcount:
                raise AccountError(f"no analyst named {name!r}")

    def names(self) -> list[tuple[str, datetime]]:
        """(name, created_at) of every analyst, by name."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(analysts.c.name, analysts.c.created_at).order_by(analysts.c.name))
            return [(row.name, row.created_at) for row in rows]

    def exists(self, name: str) -> bool:
        """Whether analyst ``name`` has an account (OIDC sign-in maps people onto accounts)."""
        with self.engine.connect() as connection:
            return connection.execute(sa.select(analysts.c.name).where(analysts.c.name == name)).first() is not None

    def check_password(self, name: str, password: str) -> bool:
        with self.engine.connect() as connection:
            stored = connection.execute(
                sa.select(analysts.c.password_hash).where(analysts.c.name == name)
            ).scalar_one_or_none()
        try:
            return _HASHER.verify(stored or _DUMMY_HASH, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def open_session(self, name: str, now: datetime) -> str:
        """A new session for ``name``; returns the cookie value (stored only as its hash)."""
        token = secrets.token_urlsafe(32)
        with self._writer.begin() as tx:
            tx.execute(console_sessions.delete().where(console_sessions.c.expires_at < now))
            tx.execute(console_sessions.insert().values(
                session_sha256=_digest(token), analyst=name, csrf_token=secrets.token_urlsafe(32),
                created_at=now, expires_at=now + timedelta(hours=SESSION_HOURS),
            ))
        return token

    def session(self, token: str, now: datetime) -> ConsoleSession | None:
        """The live session behind a cookie value, or None (unknown, expired, or its analyst removed)."""
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(console_sessions.c.analyst, console_sessions.c.csrf_token, console_sessions.c.expires_at)
                .where(console_sessions.c.session_sha256 == _digest(token))
            ).first()
        if row is None or row.expires_at <= now:
            return None
        return ConsoleSession(row.analyst, row.csrf_token, row.expires_at)

    def close_session(self, token: str) -> None:
        with self._writer.begin() as tx:
            tx.execute(console_sessions.delete().where(console_sessions.c.session_sha256 == _digest(token)))
