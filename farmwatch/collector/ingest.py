"""From request bytes to an ingest record: size cap, gzip, strict parsing, source address.

Pure functions over bytes and addresses (no HTTP framework here), so every rule can be tested
directly and the FastAPI layer stays a thin adapter.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from farmwatch.collector.config import Network
from farmwatch.collector.egress import with_report_evidence, within
from farmwatch.collector.limits import Limits
from farmwatch.collector.storage import ArrivingReport
from farmwatch.contract import NOT_AFTER, IngestRecord, Report, field_errors, to_wire
from farmwatch.errors import FarmwatchError


class Rejected(FarmwatchError):
    """A request the collector refuses: HTTP status, metric reason and ``[{field, message}]``."""

    def __init__(
        self, status: int, reason: str, errors: list[dict[str, str]], retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {errors}")
        self.status = status
        self.reason = reason
        self.errors = errors
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)

    def __reduce__(self) -> tuple[type[Rejected], tuple[int, str, list[dict[str, str]], float | None]]:
        # Pickled as it was made (serve's writer process sends refusals back: writer_process.py).
        return Rejected, (self.status, self.reason, self.errors, self.retry_after)


def _too_large(limit: int, what: str) -> Rejected:
    return Rejected(413, "too_large", [{"field": "(body)", "message": f"{what} exceeds {limit} bytes"}])


async def read_body(
    chunks: AsyncIterator[bytes], *, limit: int, declared_length: str | None, encoding: str | None
) -> bytes:
    """The request body, decompressed when gzip, never holding more than ``limit`` bytes of either form.

    The cap is checked while reading, so a client cannot make the collector buffer an endless body,
    and again on the decompressed bytes, so a small gzip bomb cannot expand past it either.
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise Rejected(415, "encoding", [{"field": "Content-Encoding", "message": f"unsupported: {encoding!r}; use gzip or none"}])
    if declared_length and declared_length.isdigit() and int(declared_length) > limit:
        raise _too_large(limit, "the body")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    received = 0
    body = bytearray()
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise _too_large(limit, "the body")
        if inflater is None:
            body += chunk
            continue
        try:
            # max_length stops inflation one byte past the cap: a bomb never expands in memory.
            body += inflater.decompress(chunk, limit + 1 - len(body))
        except zlib.error as broken:
            raise Rejected(422, "invalid", [{"field": "(body)", "message": f"not valid gzip: {broken}"}]) from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise _too_large(limit, "the decompressed body")
    if inflater is not None and (not inflater.eof or inflater.unused_data):
        problem = "data after the end of the gzip stream" if inflater.eof else "the stream is truncated"
        raise Rejected(422, "invalid", [{"field": "(body)", "message": f"not valid gzip: {problem}"}])
    return bytes(body)


def parse_report(body: bytes, not_after: datetime | None = None) -> Report:
    """Strictly parse one report; a rejection names every bad field (``network.probes[0].sent``).

    Every value must fit what the store and the detectors hold (``farmwatch.contract``'s bounds),
    and no time may lie after ``not_after`` (receipt time plus the allowed clock skew)."""
    try:
        return Report.model_validate_json(body, context={NOT_AFTER: not_after})
    except ValidationError as invalid:
        raise Rejected(422, "invalid", field_errors(invalid)) from None


def digest(report: Report) -> str:
    """SHA-256 of the report's canonical JSON: equal for the same report however it was spelt."""
    return wire_digest(to_wire(report))


_EXPONENT = re.compile(rb"e[-+]?[0-9]+[,}\]]")
"""The tail of a number in exponent form: orjson (and json.dumps) spell it with a lowercase ``e``, and
in compact JSON a number ends at a comma or a closing bracket. Hex digests in strings (``"7c1e5d"``)
do not match, so a typical report is hashed as orjson spells it. Led by the literal ``e`` with no
alternation, the regex engine skips from ``e`` to ``e``: 3.6 us over a typical report's 2 KB, where
the number-start pattern with a ``0.0000`` alternative took 28 us on the serving event loop (issue 13)."""


def _may_be_spelt_otherwise(canonical: bytes) -> bool:
    """Whether orjson's ``canonical`` may spell a number otherwise than json.dumps does: where they
    differ it holds an exponent (``1e-05`` against ``0.00001``, ``1.5e-07`` against ``1.5e-7``; orjson
    3.10.0, the lowest pyproject allows, spells ``1e16`` where 3.13 and json.dumps spell ``1e+16``) or
    a spelt-out float below 1e-4; elsewhere their compact, key-sorted UTF-8 spellings are the same bytes (strings and escapes,
    64-bit ints, other floats). A string that looks like one (``"1e5,"``) only costs the standard
    library's spelling."""
    return b"0.0000" in canonical or _EXPONENT.search(canonical) is not None


def wire_digest(wire: dict[str, Any]) -> str:
    """:func:`digest` of a report already in its wire form (an ingest record's ``report``).

    The bytes hashed are ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``'s,
    as stored digests were made (a resend is told from a conflict by them); orjson spells them about
    five times faster, and the standard library only when a number may be spelt otherwise."""
    try:
        canonical: bytes | None = orjson.dumps(wire, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits (an extra field), a lone surrogate
        canonical = None
    if canonical is None or _may_be_spelt_otherwise(canonical):
        canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(canonical).hexdigest()


def source_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client address: the peer, or — only when the peer is a trusted proxy — the nearest
    untrusted hop of ``X-Forwarded-For`` (read right to left, since the left end is client-written)."""
    address = peer or "unknown"
    if not forwarded_for or not within(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a garbled header proves nothing; keep the proxy's own address
        address = hop
        if not within(hop, trusted):
            break
    return address


def ingest_record(report: Report, received_at: datetime, source_ip: str, geo: dict[str, Any]) -> dict[str, Any]:
    """The stored, exported document (:class:`farmwatch.contract.IngestRecord`), checked against the contract."""
    skew = round((report.window_end - received_at).total_seconds(), 3)
    geo = with_report_evidence(geo, source_ip, report.network.gateway_ip if report.network else None)
    record = {"received_at": received_at, "source_ip": source_ip, "geo": geo, "report": report, "clock_skew_seconds": skew}
    return to_wire(IngestRecord.model_validate(record))


@dataclass(frozen=True)
class Received:
    """One report's body as read, with what its request told: what :func:`arriving` turns into a report
    to store (in serve's writer process, off the event loop: :mod:`farmwatch.collector.writer_process`)."""

    body: bytes  # inflated
    received_at: datetime
    not_after: datetime  # no time in the report may lie later (receipt plus the allowed clock skew)
    device_id: str  # the device the request's token belongs to
    source_ip: str
    geo: dict[str, Any]  # egress.GeoLookup's answer for source_ip
    limits: Limits | None  # the quotas to charge; None: none apply
    token_sha256: str  # checked again at the commit


def arriving(received: Received) -> ArrivingReport:
    """Parse ``received`` strictly (422 naming each bad field), check it is its token's device's (403),
    and make the ingest record and digest to store."""
    report = parse_report(received.body, received.not_after)
    if report.device_id != received.device_id:
        raise Rejected(403, "forbidden", [{"field": "device_id", "message": f"{report.device_id!r} is not the device this token was issued to"}])
    record = ingest_record(report, received.received_at, received.source_ip, received.geo)
    return ArrivingReport(record, wire_digest(record["report"]), received.received_at, len(received.body),
                          received.limits, received.token_sha256)
