"""Collector configuration: ``collector.toml`` (example: deploy/collector/collector.toml) with
command-line flags layered on top.

Unknown keys are rejected by name, because a misspelt ``max_report_byte`` silently ignored is a
security setting silently lost. Besides the collector's own keys: an ``[agent]`` table (``interval_seconds``,
``probe_options``) that ``GET /api/v1/config`` hands to agents, and detection-tuning keys in
``[detection]`` passed on to :class:`farmwatch.detectors.config.DetectionConfig`.
"""

from __future__ import annotations

import ipaddress
import ssl
import tomllib
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from farmwatch.collector.limits import Limits, LimitsError, load_limits
from farmwatch.collector.migrate import MIGRATE_MODES, MigrateMode
from farmwatch.collector.retention import RetentionError, RetentionSettings, load_retention
from farmwatch.collector.outputs import REGISTRY as OUTPUT_TYPES
from farmwatch.collector.outputs.base import OutputConfigError, OutputSettings, parse_outputs
from farmwatch.detectors.config import DetectionConfig
from farmwatch.errors import FarmwatchError

if TYPE_CHECKING:  # imported where [console.oidc] is parsed (_oidc), not by every process reading a config
    from farmwatch.collector.console.oidc import OidcSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


MAX_SCORING_PROCESSES = 64
"""More scoring processes than this is a typo: each holds its own interpreter and detectors (~0.2 GB)."""


class ConfigError(FarmwatchError, ValueError):
    """A configuration problem; the message names the file, table and key."""


@dataclass(frozen=True)
class CollectorConfig:
    """Everything ``serve`` needs besides the database URL and the listening address."""

    enroll_secret: str
    analyst_token: str
    max_report_bytes: int = 1_048_576
    trusted_proxies: tuple[Network, ...] = ()
    corporate_networks: tuple[Network, ...] = ()
    detection_interval_seconds: float = 300.0
    lookback_hours: float = 72.0
    refresh_wait_seconds: float = 10.0  # how long an API request waits for an on-demand re-score
    batch_devices: int = 500  # devices a replica claims for scoring at a time (its memory grows with it)
    scoring_processes: int = 0  # serve's child processes that score (0: a thread of the serving process)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    agent_interval_seconds: int = 300
    probe_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: tuple[OutputSettings, ...] = ()  # [[outputs]], each checked by its type (collector/outputs/)
    public_url: str | None = None  # how analysts reach this collector; alerts link devices under it
    city_db: Path | None = None
    asn_db: Path | None = None
    tls_cert_file: Path | None = None  # PEM certificate chain; with tls_key_file, serve HTTPS
    tls_key_file: Path | None = None
    console_banner: str = ""  # [console] banner: a line every console page shows (e.g. "staging", "simulated")
    oidc: OidcSettings | None = None  # [console.oidc]: sign-in through an OpenID provider (console/oidc.py)
    limits: Limits = field(default_factory=Limits)  # [limits]: what one device or address may cost
    migrate: MigrateMode = "auto"  # [storage] migrate: upgrade the schema at start, or only check it (replicas)
    retention: RetentionSettings = field(default_factory=RetentionSettings)  # [retention] (collector/retention.py)
    # Enrol secret rotation: the previous secret is still accepted until this time (both or neither).
    previous_enroll_secret: str | None = None
    previous_enroll_secret_until: datetime | None = None


_KNOWN = {
    "collector": {
        "enroll_secret_file", "analyst_token_file", "max_report_bytes", "trusted_proxies", "tls_cert_file", "tls_key_file",
        "public_url", "previous_enroll_secret_file", "previous_enroll_secret_until",
    },
    "detection": {"interval_seconds", "lookback_hours", "refresh_wait_seconds", "batch_devices", "scoring_processes"}
    | {f.name for f in fields(DetectionConfig) if f.name != "corporate_networks"},
    "geo": {"city_db", "asn_db", "corporate_networks"},
    "agent": {"interval_seconds", "probe_options"},
    "console": {"banner", "oidc"},
    "outputs": None,  # each output's keys belong to its plugin (collector/outputs/)
    "limits": None,  # checked key by key in collector/limits.py
    "storage": {"migrate"},
    "retention": None,  # checked key by key in collector/retention.py (its registry names the keys)
}


def load_config(
    path: Path | None,
    *,
    enroll_secret_file: Path | None = None,
    analyst_token_file: Path | None = None,
    tls_cert_file: Path | None = None,
    tls_key_file: Path | None = None,
) -> CollectorConfig:
    """Read ``path`` (optional) and the secret files; flags given here override the file."""
    raw = _read_toml(path) if path else {}
    where = str(path) if path else "configuration"
    collector = raw.get("collector", {})
    detection = dict(raw.get("detection", {}))
    geo = raw.get("geo", {})
    agent = raw.get("agent", {})

    secret_file = enroll_secret_file or _path(collector.get("enroll_secret_file"))
    token_file = analyst_token_file or _path(collector.get("analyst_token_file"))
    if secret_file is None:
        raise ConfigError("no enrol secret: pass --enroll-secret-file or set [collector] enroll_secret_file")
    if token_file is None:
        raise ConfigError("no analyst token: pass --analyst-token-file or set [collector] analyst_token_file")

    tls = _tls(tls_cert_file or _path(collector.get("tls_cert_file")), tls_key_file or _path(collector.get("tls_key_file")))
    corporate = _networks(geo.get("corporate_networks", []), f"{where} [geo] corporate_networks")
    interval = _number(detection.pop("interval_seconds", 300), f"{where} [detection] interval_seconds")
    lookback = _number(detection.pop("lookback_hours", 72), f"{where} [detection] lookback_hours")
    refresh_wait = _number(detection.pop("refresh_wait_seconds", 10), f"{where} [detection] refresh_wait_seconds")
    batch = detection.pop("batch_devices", 500)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"{where} [detection] batch_devices: must be an integer >= 1, got {batch!r}")
    processes = detection.pop("scoring_processes", 0)
    if not isinstance(processes, int) or isinstance(processes, bool) or not 0 <= processes <= MAX_SCORING_PROCESSES:
        raise ConfigError(f"{where} [detection] scoring_processes: must be an integer from 0 to "
                          f"{MAX_SCORING_PROCESSES}, got {processes!r}")
    tuning = _detection_tuning(detection, corporate, f"{where} [detection]")
    max_bytes = collector.get("max_report_bytes", 1_048_576)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1024:
        raise ConfigError(f"{where} [collector] max_report_bytes: must be an integer >= 1024, got {max_bytes!r}")
    probe_options = agent.get("probe_options", {})
    if not isinstance(probe_options, dict) or not all(isinstance(v, dict) for v in probe_options.values()):
        raise ConfigError(f"{where} [agent] probe_options: must map probe names to tables")
    return CollectorConfig(
        enroll_secret=_secret(secret_file, "enrol secret"),
        analyst_token=_secret(token_file, "analyst token"),
        max_report_bytes=max_bytes,
        trusted_proxies=_networks(collector.get("trusted_proxies", []), f"{where} [collector] trusted_proxies"),
        corporate_networks=corporate,
        detection_interval_seconds=interval,
        lookback_hours=lookback,
        refresh_wait_seconds=refresh_wait,
        batch_devices=batch,
        scoring_processes=processes,
        detection=tuning,
        agent_interval_seconds=int(_number(agent.get("interval_seconds", 300), f"{where} [agent] interval_seconds")),
        probe_options=probe_options,
        outputs=_outputs(raw.get("outputs", []), where),
        public_url=_public_url(collector.get("public_url"), f"{where} [collector] public_url"),
        city_db=_path(geo.get("city_db")),
        asn_db=_path(geo.get("asn_db")),
        tls_cert_file=tls[0],
        tls_key_file=tls[1],
        console_banner=_banner(raw.get("console", {}).get("banner", ""), f"{where} [console] banner"),
        oidc=_oidc(raw.get("console", {}).get("oidc"), collector.get("public_url"), where),
        migrate=_migrate_mode(raw.get("storage", {}).get("migrate", "auto"), f"{where} [storage] migrate"),
        retention=_retention(raw.get("retention", {}), where, lookback),
        limits=_limits(raw.get("limits", {}), where),
        **_previous_secret(collector, where),
    )


def _previous_secret(collector: dict[str, Any], where: str) -> dict[str, Any]:
    """The enrol secret being rotated out and until when it is still accepted: both keys or neither."""
    path, until = collector.get("previous_enroll_secret_file"), collector.get("previous_enroll_secret_until")
    if path is None and until is None:
        return {}
    if path is None or until is None:
        raise ConfigError(f"{where} [collector]: previous_enroll_secret_file and previous_enroll_secret_until go together "
                          "(the old secret, and the RFC 3339 time it stops being accepted)")
    if isinstance(until, datetime):  # TOML's own date-time type
        moment = until
    elif isinstance(until, str):
        try:
            moment = datetime.fromisoformat(until)
        except ValueError:
            moment = None
    else:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(f"{where} [collector] previous_enroll_secret_until: must be an RFC 3339 time with a zone, "
                          f"e.g. 2026-12-31T00:00:00Z, got {until!r}")
    return {"previous_enroll_secret": _secret(Path(path), "previous enrol secret"),
            "previous_enroll_secret_until": moment.astimezone(timezone.utc)}


def load_retention_config(path: Path | None) -> RetentionSettings:
    """Only ``[retention]`` of ``path`` (checked like ``serve`` does, against its lookback), for ``db prune``."""
    if path is None:
        return RetentionSettings()
    raw = _read_toml(path)
    lookback = _number(raw.get("detection", {}).get("lookback_hours", 72), f"{path} [detection] lookback_hours")
    return _retention(raw.get("retention", {}), str(path), lookback)


def _migrate_mode(value: Any, where: str) -> MigrateMode:
    for mode in MIGRATE_MODES:
        if value == mode:
            return mode
    raise ConfigError(f"{where}: must be one of {', '.join(MIGRATE_MODES)}, got {value!r}")


def _retention(table: Any, where: str, lookback_hours: float) -> RetentionSettings:
    try:
        return load_retention(table, where, lookback_hours)
    except RetentionError as problem:
        raise ConfigError(str(problem)) from None


def _oidc(table: Any, public_url: Any, where: str) -> OidcSettings | None:
    """``[console.oidc]``, which needs ``public_url``: the provider sends analysts back under it."""
    if table is None:
        return None
    if public_url is None:
        raise ConfigError(f"{where} [console.oidc] needs [collector] public_url: the provider sends analysts back "
                          "to PUBLIC_URL/console/oidc/callback")
    # Here, not at the top: the OpenID client (authlib, starlette) and the console's accounts (an
    # argon2 hash at import, 64 MiB) cost every scoring process 16 MB and 0.3 s to import otherwise.
    from farmwatch.collector.console.oidc import OidcConfigError, parse_settings

    try:
        return parse_settings(table, f"{where} [console.oidc]")
    except OidcConfigError as problem:
        raise ConfigError(str(problem)) from None


def _limits(table: Any, where: str) -> Limits:
    try:
        return load_limits(table, where)
    except LimitsError as problem:
        raise ConfigError(str(problem)) from None


def _outputs(tables: Any, where: str) -> tuple[OutputSettings, ...]:
    try:
        return parse_outputs(tables, OUTPUT_TYPES, where)
    except OutputConfigError as problem:
        raise ConfigError(str(problem)) from None


def load_outputs(path: Path) -> tuple[OutputSettings, ...]:
    """Only the ``[[outputs]]`` of ``path`` (checked like ``serve`` does), for ``outputs test``."""
    return _outputs(_read_toml(path).get("outputs", []), str(path))


def _public_url(value: Any, where: str) -> str | None:
    """An http(s) base URL with a host and nothing after the path (alerts append /console/devices/ID)."""
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{where}: must be an http:// or https:// URL with a host and no query, got {value!r}")
    return str(value).rstrip("/")


def _detection_tuning(values: dict[str, Any], corporate: tuple[Network, ...], where: str) -> DetectionConfig:
    """:class:`DetectionConfig` from ``[detection]``, each value checked against its default's type."""
    defaults = DetectionConfig()
    for name, value in values.items():
        default = getattr(defaults, name)
        if isinstance(default, float):
            _number(value, f"{where} {name}")
        elif isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where} {name}: must be an integer, got {value!r}")
        elif not isinstance(default, (int, float)) and not (
            isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
        ):
            raise ConfigError(f"{where} {name}: must map detector names to tables of parameters")
    return DetectionConfig(**values, corporate_networks=tuple(str(n) for n in corporate))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as failure:
        raise ConfigError(f"cannot read config {path}: {failure.strerror or failure}") from None
    except tomllib.TOMLDecodeError as failure:
        raise ConfigError(f"{path} is not valid TOML: {failure}") from None
    for table, value in raw.items():
        if table not in _KNOWN:
            raise ConfigError(f"{path}: unknown table [{table}]; known: {', '.join(sorted(_KNOWN))}")
        allowed = _KNOWN[table]
        if allowed is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{table}] must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ConfigError(f"{path} [{table}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
    return raw


def _banner(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 200 or "\n" in value:
        raise ConfigError(f"{where}: must be one line of at most 200 characters, got {value!r}")
    return value


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


def _tls(cert: Path | None, key: Path | None) -> tuple[Path | None, Path | None]:
    """Both files or neither; loaded once here so a bad pair fails in one line before serving."""
    if cert is None and key is None:
        return None, None
    if cert is None or key is None:
        raise ConfigError("TLS needs both a certificate and a key (--tls-cert-file and --tls-key-file)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as failure:
        raise ConfigError(f"cannot use TLS certificate {cert} with key {key}: {failure}") from None
    return cert, key


def _secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as failure:
        raise ConfigError(f"cannot read the {what} file {path}: {failure.strerror or failure}") from None
    if len(value) < 16:
        raise ConfigError(f"the {what} in {path} is shorter than 16 characters; use a long random value")
    return value


def _networks(values: Any, where: str) -> tuple[Network, ...]:
    if not isinstance(values, list):
        raise ConfigError(f"{where}: must be a list of CIDRs")
    try:
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in values)
    except ValueError as failure:
        raise ConfigError(f"{where}: {failure}") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: must be a positive number, got {value!r}")
    return float(value)
