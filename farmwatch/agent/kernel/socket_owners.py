"""Which process holds which socket, from /proc (``/proc/<pid>/fd/* -> socket:[inode]``).

The kernel's socket dump (:mod:`farmwatch.agent.kernel.tcpinfo`) names each socket's inode; the process
table names who holds it. Reading another user's ``fd`` folder needs root (or CAP_SYS_PTRACE), so
an unprivileged agent sees only its own user's sockets and counts the processes it could not read.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from farmwatch.agent.kernel.process_table import process_ids


@dataclass(frozen=True)
class ProcessInfo:
    """One process: name (never its command line), parent, real uid."""

    pid: int
    name: str
    ppid: int
    uid: int


def processes(proc_root: Path) -> dict[int, ProcessInfo]:
    """Every process in ``proc_root``, from ``/proc/<pid>/status`` (world-readable).

    Read every window for every process: plain ``open`` and only the lines wanted, since pathlib's
    glob and a dict of every field cost twice the reads themselves (issue 13's profile)."""
    found = {}
    for pid in process_ids(proc_root):
        try:
            with open(f"{proc_root}/{pid}/status", encoding="utf-8", errors="replace") as status:
                fields = {}
                for line in status:
                    key, _, value = line.partition(":")
                    if key in _STATUS_FIELDS:
                        fields[key] = value
                        if len(fields) == len(_STATUS_FIELDS):
                            break
            found[pid] = ProcessInfo(pid=pid, name=fields["Name"].strip(), ppid=int(fields["PPid"]),
                                     uid=int(fields["Uid"].split()[0]))
        except (OSError, KeyError, ValueError):
            continue  # exited meanwhile
    return found


_STATUS_FIELDS = ("Name", "PPid", "Uid")  # in the order proc(5) lists them: reading stops at Uid


def socket_holders(proc_root: Path, pids: list[int]) -> tuple[dict[int, list[int]], list[int]]:
    """Socket inode -> pids holding it, and the pids whose descriptors could not be read."""
    holders: dict[int, list[int]] = defaultdict(list)
    denied = []
    for pid in pids:
        try:
            entries = list((proc_root / str(pid) / "fd").iterdir())
        except PermissionError:
            denied.append(pid)
            continue
        except OSError:
            continue  # exited meanwhile
        for entry in entries:
            try:
                target = entry.readlink().name
            except OSError:
                continue
            if target.startswith("socket:["):
                holders[int(target[8:-1])].append(pid)
    return holders, denied


def user_names(etc_root: Path) -> dict[int, str]:
    """uid -> login name from ``<etc_root>/passwd`` (local accounts; directory users stay unknown)."""
    names: dict[int, str] = {}
    try:
        lines = (etc_root / "passwd").read_text().splitlines()
    except OSError:
        return names
    for line in lines:
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names
