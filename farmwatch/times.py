"""RFC 3339 times typed by people on command lines (--since, --now), and the bounds of any time farmwatch accepts."""

from __future__ import annotations

from datetime import datetime, timezone

# The bounds of every time the contract accepts (farmwatch.contract checks reports against them).
# Here, not in the contract, so farmwatch-detect's reading processes check records against them
# without importing pydantic before they fork.
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""No report time lies before this (no agent ran then; older is a broken or hostile clock)."""
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
"""No time lies at or after this, whatever the context: well inside pandas' range (2262-04-11)."""


def parse_utc(text: str) -> datetime:
    """An aware UTC datetime from '2026-11-28T09:00:00Z' or any offset; ValueError says what is wrong."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time such as 2026-11-28T09:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z for UTC")
    return moment.astimezone(timezone.utc)
