"""RFC 3339 times typed by people on command lines (--since, --now)."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_utc(text: str) -> datetime:
    """An aware UTC datetime from '2026-11-28T09:00:00Z' or any offset; ValueError says what is wrong."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-11-28T09:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z for UTC")
    return moment.astimezone(timezone.utc)
