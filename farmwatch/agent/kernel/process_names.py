"""Every running process's name (``/proc/<pid>/comm``), reading each pid's name once.

The socket watchers ask several times a minute whether a process worth watching runs (a catalogued
remote-access tool, an SSH/RDP/VNC server). Listing ``/proc`` is cheap; reading every process's
name each time is not, and a pid keeps its name until it execs, so a pid's name is read on the
first two listings that show it: a process caught between fork and exec (still bearing its
parent's name) is named rightly by the next. One that execs later still keeps its old name here;
the probes' end-of-window reads see the new one.
"""

from __future__ import annotations

from pathlib import Path

from farmwatch.agent.kernel.process_table import process_ids


class ProcessNames:
    """pid -> name (comm, at most 15 characters) of the processes in ``proc_root``."""

    def __init__(self, proc_root: Path) -> None:
        self.proc_root = proc_root
        self._settled: dict[int, str] = {}  # read on two listings
        self._new: dict[int, str] = {}  # read on one listing so far

    def current(self) -> dict[int, str]:
        """The processes running now; names of new pids are read (twice), gone pids forgotten."""
        settled: dict[int, str] = {}
        new: dict[int, str] = {}
        for pid in process_ids(self.proc_root):
            name = self._settled.get(pid)
            if name is not None:
                settled[pid] = name
                continue
            try:
                with open(f"{self.proc_root}/{pid}/comm", encoding="utf-8", errors="replace") as comm:
                    name = comm.read().strip()
            except OSError:
                continue  # exited meanwhile
            (settled if pid in self._new else new)[pid] = name
        self._settled, self._new = settled, new
        return {**settled, **new}
