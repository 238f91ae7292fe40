"""Which running process belongs to which service: systemd units on Linux (from the process's
cgroup), Windows services (psutil), launchd jobs on macOS (``launchctl list``)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from farmwatch.agent.probes.base import RunCommand


class RunningService(NamedTuple):
    """A running service and the names it is known by (service name, display name, label)."""

    pid: int
    names: tuple[str, ...]


def unit_of(pid: int, proc_root: Path) -> str | None:
    """The systemd unit (``x.service``) a Linux process runs in, from ``/proc/PID/cgroup``; None if none.

    A user unit nests under ``user@UID.service``: the innermost unit is the one that names the program.
    """
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as file:  # read for every
            text = file.read()  # process each window: a plain open costs half of pathlib's
    except OSError:
        return None
    if ".service" not in text:
        return None
    units = [part for line in text.splitlines() for part in line.rpartition(":")[2].split("/")
             if part.endswith(".service") and not part.startswith("user@")]
    return units[-1] if units else None


def parse_launchctl_list(output: str) -> list[RunningService]:
    """Running jobs in ``launchctl list`` output (``PID<TAB>Status<TAB>Label``; ``-`` when not running)."""
    running = []
    for line in output.splitlines():
        fields = re.split(r"\t+", line.strip())
        if len(fields) == 3 and fields[0].isdigit():
            running.append(RunningService(int(fields[0]), (fields[2],)))
    return running


def windows_services(entries: Iterable[dict[str, object]]) -> list[RunningService]:
    """Running services from psutil's ``WindowsService.as_dict()`` records."""
    return [RunningService(int(str(e["pid"])), (str(e["name"]), str(e["display_name"])))
            for e in entries if e.get("status") == "running" and e.get("pid")]


def running_services(platform: str, run: RunCommand) -> list[RunningService]:
    """Running services on Windows and macOS (Linux reads units per process: :func:`unit_of`)."""
    if platform == "win32":
        import psutil

        return windows_services(service.as_dict() for service in psutil.win_service_iter())
    if platform == "darwin":
        return parse_launchctl_list(run(["launchctl", "list"]))
    return []


def services_by_pid(services: Iterable[RunningService]) -> dict[int, list[str]]:
    """PID → the names of the services it runs."""
    by_pid: dict[int, list[str]] = defaultdict(list)
    for service in services:
        by_pid[service.pid].extend(service.names)
    return by_pid
