"""ArcSight Common Event Format (CEF) version 0: the payload the ``syslog`` output sends by default.

Source: Micro Focus "ArcSight Common Event Format (CEF) Implementation Standard" (CEF 25), sections
"Header" and "Character Encoding": the header is ``CEF:Version|Device Vendor|Device Product|Device
Version|Device Event Class ID|Name|Severity|`` and then the extension, space-separated ``key=value``.
In the header a pipe and a backslash are escaped (``\\|``, ``\\\\``); in extension values a backslash,
an equals sign and line breaks are (``\\\\``, ``\\=``, ``\\n``, ``\\r``), and a pipe is not. The
standard allows line breaks only in extension values, so header fields get them as spaces.
Extension keys come from the standard's dictionary ("ArcSight Extension Dictionary"); farmwatch's own
fields ride in the custom string/number slots (``cs1``..``cs6`` with their ``...Label``, ``cfp1``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import farmwatch
from farmwatch.collector.alerts import Alert

VENDOR = "farmwatch"
PRODUCT = "farmwatch collector"


def escape_header(value: str) -> str:
    """A header field: backslash and pipe escaped; line breaks become spaces (not allowed there)."""
    escaped = value.replace("\\", "\\\\").replace("|", "\\|")
    return escaped.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


def escape_extension(value: str) -> str:
    """An extension value: backslash, equals sign and line breaks escaped."""
    escaped = value.replace("\\", "\\\\").replace("=", "\\=")
    return escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def cef_line(
    version: int, vendor: str, product: str, device_version: str, event_class: str, name: str, severity: int,
    extension: Iterable[tuple[str, str]],
) -> str:
    """One CEF record from its header fields and its (key, value) extension pairs, in order."""
    header = [escape_header(part) for part in (vendor, product, device_version, event_class, name, str(severity))]
    pairs = " ".join(f"{key}={escape_extension(value)}" for key, value in extension)
    return f"CEF:{version}|" + "|".join(header) + "|" + pairs


def severity(risk: float) -> int:
    """CEF severity 0..10 (10 most important) from the verdict's risk 0..1."""
    return max(0, min(10, round(risk * 10)))


def _millis(moment: datetime | None) -> str | None:
    return None if moment is None else str(int(moment.timestamp() * 1000))


def format_alert(alert: Alert) -> str:
    """The CEF record of one alert; absent values (no employee, no ATT&CK id) leave their key out."""
    location = ", ".join(part for part in (alert.claimed_city, alert.claimed_country) if part)
    named: list[tuple[str, str | None, str | None]] = [  # (key, value, label of a custom slot)
        ("rt", _millis(alert.raised_at), None),
        ("externalId", alert.alert_id, None),
        ("cat", f"farmwatch/{alert.kind}", None),
        ("dhost", alert.hostname, None),
        ("duser", alert.employee_id, None),
        ("start", _millis(alert.first_seen), None),
        ("end", _millis(alert.last_seen), None),
        ("cfp1", f"{alert.risk:.3f}", "risk"),
        ("cs1", alert.verdict, "verdict"),
        ("cs2", alert.previous_verdict, "previousVerdict"),
        ("cs3", ",".join(alert.attack_ids), "attackIds"),
        ("cs4", location, "claimedLocation"),
        ("cs5", alert.device_id, "deviceId"),
        ("cs6", alert.link, "link"),
        ("msg", "\n".join(f"{f.detector}: {f.summary}" for f in alert.findings), None),
    ]
    extension: list[tuple[str, str]] = []
    for key, value, label in named:
        if value:
            extension.append((key, value))
            if label:
                extension.append((f"{key}Label", label))
    return cef_line(0, VENDOR, PRODUCT, farmwatch.__version__, f"verdict-{alert.verdict}", alert.title(),
                    severity(alert.risk), extension)
