"""A stable, non-reversible id of this machine, sent at enrolment as ``hardware_id``.

The OS's own machine id survives agent reinstalls, so the collector gives a reinstalled agent its
old device id back. machine-id(5) asks applications not to send the raw id over the network but a
keyed hash with an application-specific key; we do the same for every OS.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
from pathlib import Path

from farmwatch.agent.errors import AgentError
from farmwatch.agent.probes.base import RunCommand, run_command

_APP_KEY = b"farmwatch hardware_id v1"
_MAC_UUID = re.compile(r'"IOPlatformUUID"\s*=\s*"([0-9A-Fa-f-]{36})"')
_WIN_GUID = re.compile(r"MachineGuid\s+REG_SZ\s+([0-9A-Fa-f-]{36})")


def linux_machine_id(etc_root: Path = Path("/etc")) -> str:
    """systemd's ``/etc/machine-id`` (D-Bus's copy on systems without systemd)."""
    for path in (etc_root / "machine-id", etc_root.parent / "var/lib/dbus/machine-id"):
        try:
            value = path.read_text().strip()
        except OSError:
            continue
        if value:
            return value
    raise AgentError(f"no machine id: {etc_root / 'machine-id'} is missing or empty")


def parse_ioreg(output: str) -> str:
    """IOPlatformUUID from ``ioreg -rd1 -c IOPlatformExpertDevice`` (macOS)."""
    found = _MAC_UUID.search(output)
    if not found:
        raise AgentError("no IOPlatformUUID in the output of ioreg -rd1 -c IOPlatformExpertDevice")
    return found.group(1)


def parse_reg_query(output: str) -> str:
    """MachineGuid from ``reg query HKLM\\SOFTWARE\\Microsoft\\Cryptography /v MachineGuid``."""
    found = _WIN_GUID.search(output)
    if not found:
        raise AgentError("no MachineGuid in HKLM\\SOFTWARE\\Microsoft\\Cryptography")
    return found.group(1)


def os_machine_id(platform: str, run: RunCommand = run_command, etc_root: Path = Path("/etc")) -> str:
    """The raw machine id of the OS named by ``platform`` (``sys.platform`` values)."""
    if platform not in ("darwin", "win32"):
        return linux_machine_id(etc_root)
    argv = (
        ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"]
        if platform == "darwin"
        else ["reg", "query", r"HKLM\SOFTWARE\Microsoft\Cryptography", "/v", "MachineGuid"]
    )
    try:
        output = run(argv)
    except (OSError, subprocess.SubprocessError) as failed:
        raise AgentError(f"no machine id: {' '.join(argv)} failed: {failed}") from failed
    return parse_ioreg(output) if platform == "darwin" else parse_reg_query(output)


def hardware_id(machine_id: str) -> str:
    """The keyed SHA-256 of a machine id: stable per machine, and it does not reveal the id."""
    normalized = machine_id.strip().lower().encode()
    return hmac.new(_APP_KEY, normalized, hashlib.sha256).hexdigest()
