"""``[limits]``: what one device or one address may cost the collector, and how far a clock may run ahead.

farmwatch's adversary holds a valid device token on every farm laptop, so every limit here is a
bound on what one hostile client can do to everyone else: flood enrolment, guess secrets, fill the
database. Defaults are generous for real agents (one report every 300 s is 12 an hour) and tight
enough that one device cannot grow the store by more than ``report_bytes_per_device_per_day``.
Unknown keys and wrong types are refused by name, like the rest of ``collector.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from farmwatch.errors import FarmwatchError


class LimitsError(FarmwatchError, ValueError):
    """A bad ``[limits]`` value; the message names the key."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one client may do; each field is a ``[limits]`` key of the same name."""

    max_clock_skew_seconds: int = 86_400
    """A report time more than this after its receipt is refused (422): the device clock runs ahead."""
    reports_per_device_per_hour: int = 720
    """Stored reports per device per clock hour (UTC) before 429; 720 lets a spool drain 60x real time."""
    report_bytes_per_device_per_day: int = 64 * 1_048_576
    """Stored report bytes (uncompressed) per device per UTC day before 429."""
    enrolments_per_address_per_minute: int = 600
    """Enrolment requests per source address per minute before 429 (a whole office enrolling at once fits)."""
    failed_auth_per_address_per_minute: int = 30
    """Wrong enrol secrets and unknown device tokens per source address per minute before that
    address gets 429 for every authenticated request (slows guessing to a crawl)."""


def load_limits(table: Any, where: str) -> Limits:
    """:class:`Limits` from the ``[limits]`` table; every value a positive integer."""
    if not isinstance(table, dict):
        raise LimitsError(f"{where}: [limits] must be a table")
    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise LimitsError(f"{where} [limits]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LimitsError(f"{where} [limits] {name}: must be a positive integer, got {value!r}")
    return Limits(**table)
