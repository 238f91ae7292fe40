"""The Wi-Fi access point the laptop is associated with (its BSSID), from the OS's own tools.

Why security cares: several employees' laptops on one access point is a farm's fingerprint;
the BSSID leaves the laptop only as a salted hash. Linux asks NetworkManager
(``nmcli -t -f ACTIVE,BSSID dev wifi``: terse mode escapes ':' inside values as ``\\:``) and falls
back to nl80211 through ``iw dev IFACE link`` ("Connected to <bssid> (on IFACE)"); Windows reads
``netsh wlan show interfaces`` ("BSSID : ..." or "AP BSSID : ..." on newer builds).

macOS 14.4 removed the ``airport`` tool. The agent finds the Wi-Fi device in ``networksetup
-listallhardwareports`` ("Hardware Port: Wi-Fi" then "Device: en0") and reads ``ipconfig getsummary
<device>`` (a ``BSSID : ...`` line while associated); on older systems ``airport -I`` ("BSSID: ..."
with leading zeros of each octet dropped) still answers. Recent macOS shows ``<redacted>`` there
unless the reader may use Location Services: that, like every source failing, is said in ``errors``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from farmwatch.agent.probes.base import RunCommand
from farmwatch.errors import FarmwatchError

AIRPORT = "/System/Library/PrivateFrameworks/Apple80211.framework/Versions/Current/Resources/airport"
_MAC = re.compile(r"^[0-9a-f]{1,2}([:-][0-9a-f]{1,2}){5}$", re.IGNORECASE)


class BssidUnavailable(FarmwatchError):
    """No tool could tell the access point; the message says what was tried."""


def normalize_mac(text: str) -> str | None:
    """``A0:B:C:D:E:F`` / ``a0-0b-...`` -> ``a0:0b:0c:0d:0e:0f``; None when it is not a MAC."""
    text = text.strip()
    if not _MAC.match(text):
        return None
    return ":".join(octet.zfill(2) for octet in re.split("[:-]", text.lower()))


def parse_nmcli(output: str) -> str | None:
    """The active access point's BSSID from ``nmcli -t -f ACTIVE,BSSID dev wifi``."""
    for line in output.splitlines():
        active, _, bssid = line.partition(":")
        if active == "yes":
            return normalize_mac(bssid.replace("\\:", ":"))
    return None


def parse_iw_link(output: str) -> str | None:
    """The BSSID from ``iw dev IFACE link``; None when it says "Not connected."."""
    match = re.search(r"^Connected to ([0-9a-fA-F:]{17})", output, re.MULTILINE)
    return normalize_mac(match.group(1)) if match else None


def parse_airport(output: str) -> str | None:
    """The BSSID from macOS ``airport -I``."""
    match = re.search(r"^\s*BSSID:\s*(\S+)", output, re.MULTILINE)
    return normalize_mac(match.group(1)) if match else None


def parse_hardware_ports(output: str) -> list[str]:
    """Wi-Fi device names (``en0``) from macOS ``networksetup -listallhardwareports``."""
    devices, port = [], None
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Hardware Port":
            port = value.strip()
        elif key.strip() == "Device" and port in ("Wi-Fi", "AirPort"):  # "AirPort" before macOS 10.7
            devices.append(value.strip())
    return devices


def parse_ipconfig_summary(output: str) -> str | None:
    """The BSSID from macOS ``ipconfig getsummary <device>``; None when not associated."""
    match = re.search(r"^\s*BSSID\s*:\s*(\S+)", output, re.MULTILINE)
    if match is None:
        return None
    if match.group(1) == "<redacted>":
        raise BssidUnavailable("ipconfig getsummary shows the BSSID as <redacted> (macOS gives it only to "
                        "processes allowed to use Location Services)")
    return normalize_mac(match.group(1))


def parse_netsh(output: str) -> str | None:
    """The BSSID from Windows ``netsh wlan show interfaces``."""
    match = re.search(r"^\s*(?:AP )?BSSID\s*:\s*(\S+)", output, re.MULTILINE)
    return normalize_mac(match.group(1)) if match else None


def current_bssid(run: RunCommand, platform: str, wifi_interfaces: Sequence[str]) -> str | None:
    """The associated access point's BSSID, None when not associated; raises when unknowable."""
    if platform == "darwin":
        return _macos_bssid(run)
    if platform == "win32":
        return parse_netsh(_ask(run, ["netsh", "wlan", "show", "interfaces"]))
    if not wifi_interfaces:
        return None
    failures = []
    try:
        return parse_nmcli(_ask(run, ["nmcli", "-t", "-f", "ACTIVE,BSSID", "dev", "wifi"]))
    except BssidUnavailable as nmcli_failed:
        failures.append(str(nmcli_failed))
    for interface in wifi_interfaces:
        try:
            bssid = parse_iw_link(_ask(run, ["iw", "dev", interface, "link"]))
        except BssidUnavailable as iw_failed:
            failures.append(str(iw_failed))
            continue
        if bssid:
            return bssid
    if len(failures) > 1:
        raise BssidUnavailable("; ".join(failures))
    return None


def _macos_bssid(run: RunCommand) -> str | None:
    """ipconfig getsummary on each Wi-Fi device (macOS 13 and later), else airport (before 14.4)."""
    failures = []
    try:
        devices = parse_hardware_ports(_ask(run, ["networksetup", "-listallhardwareports"]))
    except BssidUnavailable as unlisted:
        failures.append(str(unlisted))
        devices = []
    else:
        if not devices:
            return None  # no Wi-Fi hardware (a desktop Mac on Ethernet)
    answered = False
    for device in devices:
        try:
            bssid = parse_ipconfig_summary(_ask(run, ["ipconfig", "getsummary", device]))
        except BssidUnavailable as unknown:
            failures.append(str(unknown))
            continue
        answered = True
        if bssid:
            return bssid
    if answered:
        return None  # the Wi-Fi device answered and is not associated
    try:
        return parse_airport(_ask(run, [AIRPORT, "-I"]))
    except BssidUnavailable as no_airport:
        failures.append(str(no_airport))
    raise BssidUnavailable("; ".join(failures))


def _ask(run: RunCommand, argv: list[str]) -> str:
    try:
        return run(argv)
    except (OSError, subprocess.SubprocessError) as failed:
        raise BssidUnavailable(f"{argv[0].rsplit('/', 1)[-1]} failed: {failed}") from failed
