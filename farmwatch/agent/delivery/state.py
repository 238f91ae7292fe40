"""The agent's state directory: identity (device id + token), the seq counter, config cache.

Everything here is readable by the agent's user only (directory 0700, files 0600), because the
token lets its holder report as this device. Files are replaced atomically (temp file, fsync,
rename), so a crash leaves either the old or the new content, never half of one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from farmwatch.agent.errors import AgentError, UsageError
from farmwatch.contract import INT_LIMIT

log = logging.getLogger(__name__)


def default_state_dir() -> Path:
    """The system's place for a service's state when root; the user's XDG state folder otherwise."""
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "farmwatch-agent"
    if os.geteuid() == 0:
        if sys.platform == "darwin":
            return Path("/Library/Application Support/farmwatch-agent")
        return Path("/var/lib/farmwatch-agent")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "farmwatch-agent"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) so a reader never sees a partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:  # write() loops over short writes; close() reports ENOSPC
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave the old file, not a partial new one
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); Windows cannot open folders, and NTFS journals renames."""
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


@dataclass(frozen=True)
class Identity:
    """What enrolment gave this agent."""

    device_id: str
    token: str


class StateDir:
    """The agent's on-disk state: ``identity.json``, ``next_seq``, ``config.json``, ``spool/``."""

    def __init__(self, root: Path) -> None:
        try:
            self.root = private_dir(root)
            self.spool_dir = private_dir(root / "spool")
            self.quarantine_dir = private_dir(root / "quarantine")
        except OSError as failed:
            raise UsageError(f"cannot use the state dir {root}: {failed.strerror or failed}") from failed
        self._lock: IO[str] | None = None
        self._unsaved_next_seq = 1  # the counter as this process knows it, ahead of next_seq on a full disk

    def lock(self) -> None:
        """Claim the state dir for this process until it exits.

        Two agents on one state dir would hand out the same seq twice; the second one stops here.
        """
        handle = open(self.root / "lock", "a+")
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise AgentError(f"another farmwatch-agent is using the state dir {self.root}") from None
        self._lock = handle

    @property
    def identity(self) -> Identity | None:
        data = self._read_json("identity.json")
        return Identity(**data) if data else None

    def save_identity(self, identity: Identity) -> None:
        atomic_write(self.root / "identity.json", json.dumps(asdict(identity)).encode())

    def allocate_seq(self) -> int:
        """The next report's seq; persisted before it is used, so a seq is never handed out twice.

        On a full disk the counter goes on in memory (a report must still be made and sent); if the
        agent restarts before it is saved, a reused seq meets the collector's 409 and is renumbered.
        """
        seq = self._next_seq()
        if seq > INT_LIMIT:
            raise AgentError(f"the seq counter in {self.root / 'next_seq'} is past the contract's {INT_LIMIT}; "
                             "remove the file to restart it (reports whose seq the collector holds are renumbered)")
        self._save_next_seq(seq + 1)
        return seq

    def raise_seq_floor(self, next_seq: int) -> None:
        """Never go below what the collector has stored (a reinstalled agent resumes its sequence)."""
        if next_seq > self._next_seq():
            self._save_next_seq(next_seq)

    def _next_seq(self) -> int:
        try:
            saved = int((self.root / "next_seq").read_text().strip())
        except FileNotFoundError:
            saved = 1
        return max(saved, self._unsaved_next_seq)

    def _save_next_seq(self, next_seq: int) -> None:
        self._unsaved_next_seq = next_seq
        data = f"{next_seq}\n".encode()
        try:
            atomic_write(self.root / "next_seq", data)
        except OSError as failed:
            if failed.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self._overwrite_next_seq(data, failed)

    def _overwrite_next_seq(self, data: bytes, full: OSError) -> None:
        """A full disk: write the counter over the old one, whose block is already allocated.

        The counter only grows, so the file never gets shorter; a write of a few bytes inside one
        block needs no free space and is not torn in practice.
        """
        try:
            fd = os.open(self.root / "next_seq", os.O_WRONLY)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as failed:
            log.warning("cannot save the seq counter (%s, then %s); counting on in memory",
                        full.strerror, failed.strerror or failed)

    @property
    def config(self) -> dict[str, Any]:
        """The last configuration fetched from the collector (``{}`` before the first)."""
        return self._read_json("config.json") or {}

    def save_config(self, config: dict[str, Any]) -> None:
        atomic_write(self.root / "config.json", json.dumps(config).encode())

    def _read_json(self, name: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.root / name).read_text())
        except FileNotFoundError:
            return None
        return data
