"""Which process holds which socket, from /proc (``/proc/<pid>/fd/* -> socket:[inode]``).

The kernel's socket dump (:mod:`farmwatch.agent.kernel.tcpinfo`) names each socket's inode; the process
table names who holds it. Reading another user's ``fd`` folder needs root (or CAP_SYS_PTRACE), so
an unprivileged agent sees only its own user's sockets and counts the processes it could not read.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def real_uid(proc_root: Path, pid: int) -> int | None:
    """A process's real uid, from ``/proc/<pid>/status`` (world-readable); None once it has exited.

    Read only for the few processes that may own a session: the pass over every process
    (:mod:`farmwatch.agent.kernel.process_table`) reads ``stat``, which has no uid."""
    try:
        with open(f"{proc_root}/{pid}/status", encoding="utf-8", errors="replace") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


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
