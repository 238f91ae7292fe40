"""The one interface every SIEM output implements, and how an ``[[outputs]]`` table becomes one.

An output turns an :class:`~farmwatch.collector.alerts.Alert` into bytes (:meth:`Output.format`) and
delivers a batch (:meth:`Output.send`), returning what the receiver answered or raising
:class:`DeliveryFailed`. It never decides *whether* to alert (alerts.py) nor retries (outbox.py).

Settings common to every type are checked here; each type declares its own extra keys, so an
unknown key, a missing url, a bad scheme or an unreadable secret stops ``serve`` with one line.
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from farmwatch.collector.alerts import LEVELS, Alert
from farmwatch.errors import FarmwatchError


class OutputConfigError(FarmwatchError, ValueError):
    """An ``[[outputs]]`` table that cannot work; the message names the output and the key."""


class DeliveryFailed(FarmwatchError):
    """The receiver did not accept the batch; the message says what it answered (or why not).

    ``accepted``: how many alerts at the start of the batch the receiver did accept before the
    failure (outputs that send one request per alert); those are marked delivered.
    """

    def __init__(self, message: str, accepted: int = 0) -> None:
        super().__init__(message)
        self.accepted = accepted


Check = Callable[[Any, str], Any]  # (raw value, where) -> checked value, or OutputConfigError


def text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OutputConfigError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OutputConfigError(f"{where}: must be a positive integer, got {value!r}")
    return value


def positive_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise OutputConfigError(f"{where}: must be a positive number, got {value!r}")
    return float(value)


def readable_file(value: Any, where: str) -> Path:
    path = Path(text(value, where))
    try:
        with path.open("rb"):
            pass
    except OSError as failure:
        raise OutputConfigError(f"{where}: cannot read {path}: {failure.strerror or failure}") from None
    return path


def secret_file(value: Any, where: str) -> str:
    """The secret held in a file (trimmed); the file must be readable and not empty."""
    path = readable_file(value, where)
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise OutputConfigError(f"{where}: {path} is empty")
    return secret


TLS_OPTIONS: dict[str, Check] = {"ca_file": readable_file, "cert_file": readable_file, "key_file": readable_file}
"""A private CA to trust, and a client certificate with its key (mutual TLS)."""


def client_tls(options: Mapping[str, Any], where: str, server_name_check: bool = True) -> ssl.SSLContext:
    """A client TLS context: system CAs or ``ca_file``, and ``cert_file``/``key_file`` when given."""
    try:
        context = ssl.create_default_context(cafile=str(options["ca_file"]) if "ca_file" in options else None)
        context.check_hostname = server_name_check
        if ("cert_file" in options) != ("key_file" in options):
            raise OutputConfigError(f"{where}: cert_file and key_file go together")
        if "cert_file" in options:
            context.load_cert_chain(options["cert_file"], options["key_file"])
    except (OSError, ssl.SSLError) as failure:
        raise OutputConfigError(f"{where}: cannot use the TLS files: {failure}") from None
    return context


@dataclass(frozen=True)
class OutputSettings:
    """One checked ``[[outputs]]`` table."""

    name: str
    type: str
    format: str
    url: str
    min_verdict: str = "review"
    max_pending: int = 10_000  # alerts waiting for this output; more are kept as overflow, not sent
    retry_max_seconds: float = 300.0  # the longest wait between two delivery attempts
    options: Mapping[str, Any] = field(default_factory=dict)  # the type's own keys, checked


class Output(ABC):
    """A SIEM destination. Subclasses set the class attributes and implement format and send."""

    type_name: ClassVar[str]
    formats: ClassVar[tuple[str, ...]]  # the first is the default
    schemes: ClassVar[tuple[str, ...]]  # URL schemes accepted; "file" also admits a plain path
    options: ClassVar[dict[str, Check]] = {}
    required: ClassVar[tuple[str, ...]] = ()  # of ``options``, the keys this type cannot work without
    batch_size: ClassVar[int] = 100  # most alerts one send() gets

    def __init__(self, settings: OutputSettings) -> None:
        self.settings = settings
        self.name = settings.name

    @abstractmethod
    def format(self, alert: Alert) -> bytes:
        """The bytes this output writes for one alert."""

    @abstractmethod
    def send(self, batch: Sequence[Alert]) -> str:
        """Deliver ``batch`` in order; return the receiver's answer, or raise :class:`DeliveryFailed`."""

    def close(self) -> None:
        """Release what the output holds open (files, connections)."""


COMMON_KEYS = {"name", "type", "format", "url", "min_verdict", "max_pending", "retry_max_seconds"}


def parse_output(raw: Any, index: int, registry: Mapping[str, type[Output]], where: str) -> OutputSettings:
    """Check one ``[[outputs]]`` table against the common keys and its type's own keys."""
    here = f"{where} [[outputs]] #{index + 1}"
    if not isinstance(raw, dict):
        raise OutputConfigError(f"{here}: must be a table")
    kind = raw.get("type")
    if kind not in registry:
        raise OutputConfigError(f"{here}: unknown output type {kind!r}; known: {', '.join(sorted(registry))}")
    output = registry[str(kind)]
    name = text(raw.get("name", kind), f"{here} name")
    here = f"{where} output {name!r} ({kind})"
    unknown = sorted(set(raw) - COMMON_KEYS - set(output.options))
    if unknown:
        known = sorted(COMMON_KEYS | set(output.options))
        raise OutputConfigError(f"{here}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = raw.get("format", output.formats[0])
    if chosen not in output.formats:
        raise OutputConfigError(f"{here} format: must be one of {', '.join(output.formats)}, got {chosen!r}")
    if "url" not in raw:
        raise OutputConfigError(f"{here}: url is missing")
    url = text(raw["url"], f"{here} url")
    _check_url(url, output.schemes, f"{here} url")
    floor = raw.get("min_verdict", "review")
    if floor not in LEVELS or floor == "clear":
        raise OutputConfigError(f"{here} min_verdict: must be review or farm, got {floor!r}")
    missing = [key for key in output.required if key not in raw]
    if missing:
        raise OutputConfigError(f"{here}: {', '.join(missing)} is missing")
    options = {key: check(raw[key], f"{here} {key}") for key, check in output.options.items() if key in raw}
    settings = OutputSettings(
        name=name, type=str(kind), format=chosen, url=url, min_verdict=floor,
        max_pending=positive_int(raw.get("max_pending", 10_000), f"{here} max_pending"),
        retry_max_seconds=positive_number(raw.get("retry_max_seconds", 300), f"{here} retry_max_seconds"),
        options=options,
    )
    output(settings).close()  # builds TLS contexts and opens files now, so a broken one fails here
    return settings


def _check_url(url: str, schemes: Sequence[str], where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in schemes and parts.scheme != "file":
        if not parts.hostname:
            raise OutputConfigError(f"{where}: {url!r} names no host")
        try:
            _ = parts.port  # urlsplit checks the port only when asked
        except ValueError:
            raise OutputConfigError(f"{where}: {url!r} has a bad port") from None
        return
    if "file" in schemes and (parts.scheme in ("", "file")) and (parts.path.startswith("/")):
        return
    wanted = ", ".join(f"{s}://" for s in schemes if s != "file")
    if "file" in schemes:
        wanted += ", or an absolute file path"
    raise OutputConfigError(f"{where}: {url!r} must start with {wanted}")


def file_path(url: str) -> Path:
    """The path a file output writes: a plain absolute path or a file:// URL."""
    parts = urlsplit(url)
    return Path(parts.path if parts.scheme == "file" else url)


def parse_outputs(raw: Any, registry: Mapping[str, type[Output]], where: str) -> tuple[OutputSettings, ...]:
    """Every ``[[outputs]]`` table checked; names must be unique (the outbox keys on them)."""
    if not isinstance(raw, list):
        raise OutputConfigError(f"{where}: outputs must be written as [[outputs]] tables")
    parsed = tuple(parse_output(item, index, registry, where) for index, item in enumerate(raw))
    names = [settings.name for settings in parsed]
    for name in names:
        if names.count(name) > 1:
            raise OutputConfigError(f"{where}: two outputs are named {name!r}; give each a distinct name")
    return parsed
