"""Kernel reads several probes make, made once: one socket watcher thread for the agent, and one
pass over ``/proc`` and one TCP socket dump per collection.

The remote_access, sessions and network probes each used to walk ``/proc`` and the first two each
dumped the kernel's TCP table at every window's end, and each ran a socket watcher of its own
(issue 13's profile). The runner opens a :meth:`KernelReads.collection` around one report's
collection; inside it the first probe to ask reads, and the others get the same rows. Outside one
(a probe's ``collect`` called on its own, a socket watcher's claim between windows) every call
reads afresh, so nothing is ever older than the collection that asked for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from farmwatch.agent.kernel.process_table import ProcessRow, process_rows
from farmwatch.agent.kernel.socket_watch import SocketWatch
from farmwatch.agent.kernel.tcpinfo import ALL_STATES, STATE_NAMES, TcpSocket, tcp_sockets

_STATE_NUMBERS = {name: number for number, name in STATE_NAMES.items()}
HELD_STATES = ALL_STATES & ~(1 << _STATE_NUMBERS["TIME_WAIT"]) & ~(1 << _STATE_NUMBERS["SYN_RECV"])
"""Socket states a process can hold: TIME_WAIT sockets and half-open connections belong to no process
(no inode), and a busy machine has thousands of the former, so the kernel leaves them out of the dump."""


class KernelReads:
    """The agent's shared kernel reads for one ``proc_root`` (see the module docstring)."""

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self.proc_root = proc_root
        self.watch = SocketWatch(proc_root)  # every probe's socket watcher is polled by this one
        self._lock = threading.Lock()
        self._open = 0  # collections open now
        self._processes: list[ProcessRow] | None = None
        self._sockets: list[TcpSocket] | None = None

    @contextmanager
    def collection(self) -> Iterator[None]:
        """Within this block, :meth:`processes` and :meth:`tcp_sockets` read once and share."""
        with self._lock:
            self._open += 1
        try:
            yield
        finally:
            with self._lock:
                self._open -= 1
                if not self._open:
                    self._processes = self._sockets = None

    def processes(self) -> list[ProcessRow]:
        """Every process: :func:`~farmwatch.agent.kernel.process_table.process_rows`, once per collection."""
        with self._lock:
            if self._processes is not None:
                return self._processes
            rows = list(process_rows(self.proc_root))
            if self._open:
                self._processes = rows
            return rows

    def tcp_sockets(self) -> list[TcpSocket]:
        """Every TCP socket a process can hold (:data:`HELD_STATES`), with RTTs: one NETLINK_SOCK_DIAG
        dump per collection. Raises :class:`~farmwatch.agent.kernel.tcpinfo.RttUnavailable`."""
        with self._lock:
            if self._sockets is not None:
                return self._sockets
            found = tcp_sockets(HELD_STATES)
            if self._open:
                self._sockets = found
            return found
