"""Every process's name, parent, executable and start time in one pass over ``/proc`` (Linux).

What psutil's ``process_iter(["name", "create_time", "exe"])`` gives, read with one ``stat`` file
and one ``exe`` link per process and none of psutil's per-attribute wrapping, which cost the
remote-access probe about as much again as the reads themselves (issue 13's profile). Names follow
psutil's rule: ``comm`` (proc(5): cut to 15 characters), extended to the base name of the
executable's first argument when that starts with the cut name; nothing else of the command line
is kept. The agent makes this pass once per collection for every probe
(:class:`~farmwatch.agent.kernel.shared_reads.KernelReads`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_COMM_LENGTH = 15  # TASK_COMM_LEN - 1: comm longer than this is cut
_DELETED = " (deleted)"  # the kernel's suffix on the exe link of a replaced or removed executable
_STARTTIME_FIELD = 19  # field 22 of /proc/<pid>/stat, counted after "pid (comm) "
_PPID_FIELD = 1  # field 4


@dataclass(frozen=True)
class ProcessRow:
    """One process: pid, name, executable path (None when unreadable) and start time (Unix seconds)."""

    pid: int
    name: str  # comm, or the executable's name where comm is its cut (psutil's name())
    exe: str | None
    create_time: float | None
    comm: str = ""  # the kernel's task name, at most 15 characters (what /proc/<pid>/comm says)
    ppid: int = 0


def process_ids(proc_root: Path) -> list[int]:
    """The pids under ``proc_root`` now."""
    try:
        return [int(entry) for entry in os.listdir(proc_root) if entry.isdigit()]
    except OSError:
        return []


def process_rows(proc_root: Path) -> Iterator[ProcessRow]:
    """One row per process still there when its ``stat`` file is read; exited ones are skipped."""
    boot = _boot_time(proc_root)
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in process_ids(proc_root):
        folder = f"{proc_root}/{pid}"
        stat = _read(f"{folder}/stat")
        if stat is None:
            continue
        text = stat.decode("utf-8", "replace")
        opened, closed = text.find("("), text.rfind(")")  # comm may itself hold parentheses
        comm = text[opened + 1:closed]
        fields = text[closed + 2:].split()
        created = boot + int(fields[_STARTTIME_FIELD]) / ticks if boot is not None and len(fields) > _STARTTIME_FIELD else None
        name = _extended_name(folder, comm) if len(comm) >= _COMM_LENGTH else comm
        yield ProcessRow(pid, name, _executable(folder), created, comm, int(fields[_PPID_FIELD]))


def _extended_name(folder: str, cut: str) -> str:
    """The executable's base name from argv[0] when it begins with the cut ``comm``; else ``comm``."""
    argv = _read(f"{folder}/cmdline")
    first = os.path.basename(argv.split(b"\0", 1)[0].decode("utf-8", "replace")) if argv else ""
    return first if first.startswith(cut) else cut


def _executable(folder: str) -> str | None:
    try:
        path = os.readlink(f"{folder}/exe")
    except OSError:  # a kernel thread, another user's process without root, or gone
        return None
    path = path.split("\0", 1)[0]
    if path.endswith(_DELETED) and not os.path.exists(path):
        path = path[: -len(_DELETED)]
    return path or None


def _boot_time(proc_root: Path) -> float | None:
    """Boot time (Unix seconds) from ``/proc/stat``'s ``btime``."""
    for line in (_read(f"{proc_root}/stat") or b"").splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    return None


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None
