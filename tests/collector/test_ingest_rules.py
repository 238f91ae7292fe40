"""The ingest rules as plain functions (body cap, gzip, source address, digest) and /healthz going 503."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import ipaddress
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from collector_helpers import report_for
from collector_process import free_port

from farmwatch.collector.app import create_app
from farmwatch.collector.config import CollectorConfig
from farmwatch.collector.ingest import (
    Rejected,
    _may_be_spelt_otherwise,
    digest,
    parse_report,
    read_body,
    source_address,
    wire_digest,
)
from farmwatch.collector.storage import Storage
from farmwatch.contract import to_wire


def read(chunks: list[bytes], limit: int, encoding: str | None = None, length: str | None = None) -> bytes:
    async def stream() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return asyncio.run(read_body(stream(), limit=limit, declared_length=length, encoding=encoding))


def test_body_at_the_cap_passes_and_one_byte_more_is_413() -> None:
    assert read([b"a" * 600, b"b" * 424], 1024) == b"a" * 600 + b"b" * 424
    with pytest.raises(Rejected) as refused:
        read([b"a" * 600, b"b" * 425], 1024)
    assert refused.value.status == 413


def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with pytest.raises(Rejected) as refused:
        read([], 1024, length="5000")
    assert refused.value.status == 413


def test_gzip_is_inflated_in_pieces_and_capped() -> None:
    packed = gzip.compress(b"x" * 5000)
    pieces = [packed[i : i + 7] for i in range(0, len(packed), 7)]
    assert read(pieces, 5000, "gzip") == b"x" * 5000
    with pytest.raises(Rejected) as refused:
        read(pieces, 4999, "gzip")
    assert (refused.value.status, refused.value.reason) == (413, "too_large")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param(gzip.compress(b"{}")[:-3], "truncated", id="truncated"),
        pytest.param(gzip.compress(b"{}") + gzip.compress(b"{}"), "after the end", id="second-member"),
        pytest.param(b"{}", "not valid gzip", id="plain-bytes"),
    ],
)
def test_broken_gzip_is_422(body: bytes, words: str) -> None:
    with pytest.raises(Rejected) as refused:
        read([body], 1024, "gzip")
    assert refused.value.status == 422 and words in refused.value.errors[0]["message"]


def test_unknown_encoding_is_415() -> None:
    with pytest.raises(Rejected) as refused:
        read([b"{}"], 1024, "br")
    assert refused.value.status == 415


PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        pytest.param("192.0.2.1", "8.8.8.8", "192.0.2.1", id="untrusted-peer"),
        pytest.param("10.1.1.1", None, "10.1.1.1", id="no-header"),
        pytest.param("10.1.1.1", "8.8.8.8", "8.8.8.8", id="one-hop"),
        pytest.param("10.1.1.1", "6.6.6.6, 8.8.8.8, 10.2.2.2", "8.8.8.8", id="spoofed-left-end"),
        pytest.param("10.1.1.1", "10.3.3.3, 10.2.2.2", "10.3.3.3", id="all-trusted"),
        pytest.param("10.1.1.1", "8.8.8.8, garbage", "10.1.1.1", id="garbled"),
    ],
)
def test_source_address(peer: str, header: str | None, expected: str) -> None:
    assert source_address(peer, header, PROXIES) == expected


def test_digest_ignores_spelling_but_not_content() -> None:
    report = report_for("lt-1", 3)
    compact = parse_report(json.dumps(report).encode())
    spaced = parse_report(json.dumps(report, indent=3).replace('"2026-10-02T08:30:00Z"', '"2026-10-02T10:30:00+02:00"').encode())
    assert digest(compact) == digest(spaced)
    report["input"]["key_events"] += 1
    assert digest(parse_report(json.dumps(report).encode())) != digest(compact)


def _stored_spelling(wire: dict[str, Any]) -> str:
    """The digest as stored digests were made: SHA-256 of the standard library's canonical JSON."""
    return hashlib.sha256(json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def test_a_typical_report_is_hashed_as_orjson_spells_it() -> None:
    """The standard library's spelling is the slow path: hex digests in strings ("7c1e5d...", which
    hold a digit before an "e") must not send a typical report there; a number in exponent form,
    spelt with or without its sign (orjson 3.10.0 writes 1e16), must."""
    wire = to_wire(parse_report(json.dumps(report_for("lt-1", 3)).encode()))
    spelt = orjson.dumps(wire, option=orjson.OPT_SORT_KEYS)
    assert re.search(rb'"[0-9a-f]*[0-9]e[0-9a-f]*"', spelt)  # the fixture holds such a digest
    assert not _may_be_spelt_otherwise(spelt)
    for number in (b"1e16", b"-1e+16", b"1.5e17", b"1e-05", b"0.00001"):
        assert _may_be_spelt_otherwise(b'{"a":[1,' + number + b"]}"), number
        assert _may_be_spelt_otherwise(b'{"a":' + number + b"}"), number


def test_a_report_digest_hashes_the_bytes_stored_digests_were_made_of() -> None:
    """wire_digest spells the canonical JSON with orjson where that gives json.dumps's bytes, and
    with json.dumps where a number may be spelt otherwise: a resend of a report stored before is
    still told from a conflict. Numbers of every magnitude (where orjson's spelling differs: 1e-05,
    1e+16), strings with escapes, non-ASCII and number-like text, nested in lists and objects."""
    wire = to_wire(parse_report(json.dumps(report_for("lt-1", 3)).encode()))
    assert wire_digest(wire) == _stored_spelling(wire)
    magnitudes = [0.0, -0.0, 1e-300, 5e-324, 1e-7, -1.5e-5, 9.99e-5, 1e-4, 0.00012, 0.1, 2.5, 123.456, 1e15,
                  9.999999999999998e15, 1e16, -1e16, 1.5e17, 1e22, 1.7976931348623157e308, 2**63 - 1, -(2**63)]
    texts = ["", "plain", "quote \" and \\ slash", "\n\t\r\b\f\x00\x1f\x7f", "\u2028 é 漢字 🙂", "ab3e5", ":1e5", ",0.00001"]
    for value in [*magnitudes, *texts]:
        for placed in ({**wire, "extra": value}, {**wire, "extra": [1, {"z": value, "a": [value]}]}):
            assert wire_digest(placed) == _stored_spelling(placed), value
    assert wire_digest({**wire, "extra": 2**70}) == _stored_spelling({**wire, "extra": 2**70})  # beyond orjson's ints


@contextmanager
def served(app: FastAPI) -> Iterator[httpx.Client]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread (this process holds the store,
    so the test can pull it away); yields an HTTP client pointed at it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_healthz_is_503_while_the_store_cannot_be_opened(tmp_path: Path) -> None:
    home = tmp_path / "data"
    home.mkdir()
    storage = Storage.open(f"sqlite:///{home / 'farmwatch.db'}")
    config = CollectorConfig(enroll_secret="e" * 20, analyst_token="a" * 20)
    with served(create_app(storage, config, background_scoring=False)) as client:
        assert client.get("/healthz").status_code == 200
        storage.engine.dispose()  # close pooled connections so the next query must open the file
        home.rename(tmp_path / "moved")
        answer = client.get("/healthz")
        assert answer.status_code == 503
        assert "does not answer" in answer.json()["status"]
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "farmwatch_devices NaN" in metrics.text
        (tmp_path / "moved").rename(home)
        assert client.get("/healthz").status_code == 200
    storage.close()
