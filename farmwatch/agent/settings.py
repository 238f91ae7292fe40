"""The agent's settings: command-line flags over an optional TOML file over defaults.

``--config FILE`` (all keys optional)::

    [agent]
    collector = "https://farmwatch.example.com"
    enroll_secret_file = "/etc/farmwatch/enroll-secret"
    state_dir = "/var/lib/farmwatch-agent"
    salt = "company-wide secret"        # salts hashes of outside identifiers (MACs, BSSIDs)
    ca_file = "/etc/farmwatch/ca.pem"   # trust this CA for an https:// collector (default: system CAs)
    interval_seconds = 300
    probes = ["remote_access"]          # default: every registered probe
    input_helper_socket = "/var/run/farmwatch-agent/input.sock"  # take input timing from per-user
                                        # helpers (farmwatch-agent input-helper) instead of reading it
    input_helper_group = "staff"        # who may connect (socket 0660 root:group); default: 0600
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .delivery.state import default_state_dir
from .errors import UsageError
from .probes.input.helper_pipe import DEFAULT_PIPE, PIPE_PREFIX
from .probes.registry import PROBES

DEFAULT_INTERVAL_SECONDS = 300.0

_KEYS: dict[str, type | tuple[type, ...]] = {
    "collector": str, "enroll_secret_file": str, "state_dir": str, "salt": str,
    "interval_seconds": (int, float), "probes": list, "ca_file": str,
    "input_helper_socket": str, "input_helper_group": str,
}
# sun_path is 104 bytes on macOS (108 on Linux), its terminating NUL included (<sys/un.h>)
MAX_SOCKET_PATH_BYTES = 103


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, resolved once."""

    collector: str | None
    enroll_secret_file: Path | None
    state_dir: Path
    salt: str
    interval_seconds: float | None  # None: the collector's choice, else the default
    probes: list[str]
    ca_file: Path | None = None
    input_helper_socket: Path | None = None  # per-user input helpers send here; None: the agent reads input
    input_helper_group: str | None = None

    def enroll_secret(self) -> str:
        """The enrol secret, read from its file; a missing or empty file is a one-line error."""
        if self.enroll_secret_file is None:
            raise UsageError("--enroll-secret-file is required to talk to a collector")
        try:
            secret = self.enroll_secret_file.read_text().strip()
        except OSError as failed:
            reason = failed.strerror
            raise UsageError(f"cannot read the enrol secret file {self.enroll_secret_file}: {reason}") from failed
        if not secret:
            raise UsageError(f"the enrol secret file {self.enroll_secret_file} is empty")
        return secret

    def tls(self) -> ssl.SSLContext | None:
        """How to check the collector's certificate: the configured CA, else (None) the system's."""
        if self.ca_file is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as failed:
            raise UsageError(f"cannot use ca_file {self.ca_file}: {failed}") from failed

    def collector_url(self) -> str:
        """The collector's base URL; required for every command but ``once --print``."""
        if not self.collector:
            raise UsageError("--collector URL is required (or use 'once --print' to only print a report)")
        if not self.collector.startswith(("http://", "https://")) or not urllib.parse.urlsplit(self.collector).hostname:
            raise UsageError(f"--collector must be an http:// or https:// URL with a host, got {self.collector!r}")
        return self.collector.rstrip("/")


def load_file(path: Path | None) -> dict[str, Any]:
    """The ``[agent]`` table of a config file, type-checked key by key."""
    if path is None:
        return {}
    try:
        table = tomllib.loads(path.read_text()).get("agent", {})
    except OSError as failed:
        raise UsageError(f"cannot read config file {path}: {failed.strerror}") from failed
    except tomllib.TOMLDecodeError as bad:
        raise UsageError(f"{path}: not valid TOML: {bad}") from bad
    for key, value in table.items():
        expected = _KEYS.get(key)
        if expected is None:
            raise UsageError(f"{path}: unknown key [agent].{key} (known: {', '.join(sorted(_KEYS))})")
        if not isinstance(value, expected):
            raise UsageError(f"{path}: [agent].{key} has the wrong type ({type(value).__name__})")
    unknown = set(table.get("probes", [])) - set(PROBES)
    if unknown:
        raise UsageError(f"{path}: [agent].probes names unknown probes: {', '.join(sorted(unknown))}")
    return dict(table)


def helper_socket_path(text: str, platform: str = sys.platform) -> Path:
    """An input helper socket path, refused unless absolute and short enough for a Unix socket; on
    Windows a named pipe, ``\\\\.\\pipe\\NAME``."""
    if platform == "win32":
        return _pipe_name(text)
    path = Path(text)
    if not path.is_absolute():
        raise UsageError(f"input_helper_socket must be an absolute path, got {text!r}")
    if len(text.encode()) > MAX_SOCKET_PATH_BYTES:
        raise UsageError(f"input_helper_socket is {len(text.encode())} bytes long; a Unix socket path "
                         f"holds at most {MAX_SOCKET_PATH_BYTES}")
    if path.is_dir():
        raise UsageError(f"input_helper_socket {text!r} is a directory; name the socket file in it")
    return path


def _pipe_name(text: str) -> Path:
    """A local named pipe's name (CreateNamedPipe: "\\\\.\\pipe\\" then up to 256 characters in all,
    no backslash after the prefix), kept as the Path the settings carry."""
    name = text.removeprefix(PIPE_PREFIX)
    if not text.startswith(PIPE_PREFIX) or not name or "\\" in name or len(text) > 256:
        raise UsageError(f"input_helper_socket on Windows is a local named pipe such as {DEFAULT_PIPE}, got {text!r}")
    return Path(text)


def _helper_group(name: str | None, socket_path: Path | None, platform: str = sys.platform) -> str | None:
    if name is None:
        return None
    if socket_path is None:
        raise UsageError("input_helper_group is set but input_helper_socket is not")
    if platform == "win32":
        raise UsageError("input_helper_group is for the Unix socket; on Windows the pipe lets every signed-in "
                         "user write and the service reads each sender's account from its process")
    import grp  # Unix only: Windows was refused above

    try:
        grp.getgrnam(name)
    except KeyError:
        raise UsageError(f"input_helper_group {name!r} is not a group on this machine") from None
    return name


def resolve(args: argparse.Namespace) -> Settings:
    """Flags win over the config file, which wins over the defaults."""
    file = load_file(args.config)

    def pick(flag: str, key: str) -> Any:
        value = getattr(args, flag, None)
        return value if value is not None else file.get(key)

    secret_file = pick("enroll_secret_file", "enroll_secret_file")
    state_dir = pick("state_dir", "state_dir")
    interval = pick("interval", "interval_seconds")
    socket_text = pick("input_helper_socket", "input_helper_socket")
    helper_socket = helper_socket_path(socket_text) if socket_text is not None else None
    return Settings(
        collector=pick("collector", "collector"),
        enroll_secret_file=Path(secret_file) if secret_file else None,
        state_dir=Path(state_dir) if state_dir else default_state_dir(),
        salt=file.get("salt", ""),
        interval_seconds=float(interval) if interval is not None else None,
        probes=list(file.get("probes", PROBES)),
        ca_file=Path(file["ca_file"]) if "ca_file" in file else None,
        input_helper_socket=helper_socket,
        input_helper_group=_helper_group(pick("input_helper_group", "input_helper_group"), helper_socket),
    )
