"""``farmwatch-agent input-helper``: input timing in the signed-in user's session, sent to the service.

The helper runs the input probe's own listeners as the user (pynput on macOS and Windows; X11 on ``DISPLAY``,
else the kernel's devices, on Linux) and every ``flush_seconds`` sends what they saw, reduced to
an :class:`~.helper_protocol.InputAggregate`, to the service's socket. It never sends, logs or
keeps a key, a character, a pointer position or a window title.

While the service is not listening (it restarts, or starts later than the user's session) the
helper tries again at every flush and drops what it saw meanwhile: the service has no window to
count it in. It runs until SIGTERM or SIGINT (launchd and a session's logout send SIGTERM; on
Windows, where it is a windowless program a Scheduled Task starts at sign-in, until sign-out ends it).
The connection is a Unix socket, or a named pipe on Windows (:mod:`.helper_transport`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable

from .helper_protocol import FLUSH_SECONDS, HelperMessage, encode
from .helper_transport import ServiceConnection, connect_to_service, current_user_id
from .probe import InputTimingProbe

log = logging.getLogger(__name__)


class _Channel:
    """The connection to the service, opened again after it went away."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: ServiceConnection | None = None
        self._said_why: str | None = None  # the last failure logged, so a long outage logs once

    def connected(self) -> bool:
        if self._connection is None:
            try:
                connection = connect_to_service(self.path)
            except OSError as error:
                self._failed(f"cannot reach the agent's service on {self.path}: {error.strerror or error}")
                return False
            self._connection = connection
            self._said_why = None
            log.info("connected to the agent's service on %s", self.path)
        return True

    def send(self, line: bytes) -> None:
        assert self._connection is not None
        try:
            self._connection.sendall(line)
        except OSError as error:  # the service stopped or refused us: reconnect at the next flush
            self._failed(f"lost the agent's service on {self.path}: {error.strerror or error}")
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _failed(self, why: str) -> None:
        if why != self._said_why:
            log.warning("%s; trying again every flush", why)
            self._said_why = why


def _sendable(names: list[str]) -> list[str]:
    """Device names within the message's bounds (a device can name itself anything)."""
    return [name[:200] for name in names if "\0" not in name][:32]


def run_helper(socket_path: Path, stop: threading.Event, flush_seconds: float = FLUSH_SECONDS,
               context: ProbeContext | None = None) -> int:
    """Listen to this user's input and send its aggregates to ``socket_path`` until ``stop`` is set."""
    probe = InputTimingProbe(context or ProbeContext())
    channel = _Channel(socket_path)
    uid = current_user_id()
    probe.start()
    unavailable: str | None = None
    try:
        while not stop.wait(flush_seconds):
            try:
                part, source, devices = probe.drain()
            except ProbeUnavailable as why:  # e.g. no display yet, or macOS Input Monitoring not granted
                if str(why) != unavailable:
                    log.warning("cannot listen to input: %s; trying again every flush", why)
                    unavailable = str(why)
                continue
            unavailable = None
            for problem in probe.problems:
                log.warning("%s", problem)
            probe.problems = []
            if source is None or not channel.connected():
                continue
            channel.send(encode(HelperMessage(uid=uid, source=source, virtual_devices=_sendable(devices),
                                              aggregate=part)))
    finally:
        channel.close()
        probe.stop()
    return 0
