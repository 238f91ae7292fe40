"""Which IANA time zone a machine is set to, from each OS's own sources.

A laptop configured for another country's time zone is a weak signal on its own (travel,
preference), but it is cheap, and farms often forget it. Parsers take the raw text each OS
gives, so tests replay recorded outputs.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import cache
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone_from_tz_variable(value: str | None) -> str | None:
    """The IANA name in a ``TZ`` value (``":Europe/Berlin"`` or ``"Europe/Berlin"``), else None.

    POSIX rule strings such as ``"EST5EDT,M3.2.0,M11.1.0"`` name no zone and give None.
    """
    if not value:
        return None
    name = value.removeprefix(":").strip()
    if name.startswith("/"):  # TZ=:/usr/share/zoneinfo/Asia/Seoul
        return zone_from_zoneinfo_path(name)
    return name if is_iana_name(name) else None


def zone_from_zoneinfo_path(target: str) -> str | None:
    """The zone name in a zoneinfo file path, e.g. the ``/etc/localtime`` symlink target.

    Linux: ``/usr/share/zoneinfo/Asia/Seoul``; macOS: ``/var/db/timezone/zoneinfo/Asia/Seoul``.
    """
    _, marker, name = target.partition("zoneinfo/")
    name = name.removeprefix("posix/").removeprefix("right/")
    return name if marker and is_iana_name(name) else None


def is_iana_name(name: str) -> bool:
    """Whether ``name`` looks like an IANA zone name and this Python knows it."""
    if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_systemsetup(output: str) -> str | None:
    """macOS ``systemsetup -gettimezone``: ``Time Zone: America/New_York``."""
    match = re.search(r"Time Zone:\s*(\S+)", output)
    return match.group(1) if match and is_iana_name(match.group(1)) else None


@cache
def windows_zones() -> dict[str, str]:
    """Windows zone id -> IANA zone, from the CLDR table shipped in ``agent/data``."""
    table = (files("farmwatch.agent") / "data" / "windows_zones.tsv").read_text(encoding="utf-8")
    pairs = (line.split("\t") for line in table.splitlines() if line and not line.startswith("#"))
    return {windows_id: iana for windows_id, iana in pairs}


def parse_tzutil(output: str) -> str | None:
    """Windows ``tzutil /g`` (e.g. ``Korea Standard Time``) mapped to its IANA zone."""
    windows_id = output.strip().removesuffix("_dstoff")  # "_dstoff": DST adjustment turned off
    return windows_zones().get(windows_id)


def linux_zone(tz_variable: str | None, etc_root: Path) -> str | None:
    """The zone a Linux box uses: ``TZ`` first, then the ``/etc/localtime`` link, ``/etc/timezone``.

    ``/etc/localtime`` is what glibc reads; ``/etc/timezone`` is Debian's older mirror of it.
    """
    zone = zone_from_tz_variable(tz_variable)
    if zone:
        return zone
    localtime = etc_root / "localtime"
    if localtime.is_symlink():
        zone = zone_from_zoneinfo_path(str(localtime.readlink()))
        if zone:
            return zone
    try:
        name = (etc_root / "timezone").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name if is_iana_name(name) else None


def utc_offset_minutes(zone: str | None, at: float) -> int | None:
    """Offset from UTC of ``zone`` at POSIX time ``at``, in minutes (east positive)."""
    if zone is None:
        return None
    offset = datetime.fromtimestamp(at, tz=timezone.utc).astimezone(ZoneInfo(zone)).utcoffset()
    return None if offset is None else int(offset.total_seconds() // 60)
