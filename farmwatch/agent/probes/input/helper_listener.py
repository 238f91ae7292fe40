"""The service's end of the per-user input helpers, whatever carries their messages.

A transport (:mod:`.helper_socket`: a Unix socket on macOS and Linux; :mod:`.helper_pipe`: a named
pipe on Windows) accepts each helper's connection, asks the operating system who the sender is
(the kernel's peer credentials; the pipe client's process token) and hands this class the bytes
it reads. Everything after that is shared here, so both transports refuse the same messages in
the same words:

- a connection whose user already has :data:`MAX_HELPERS_PER_USER` open is refused (one user's
  processes cannot hold the service's connections);
- a message that is not valid, too long (:data:`~.helper_protocol.MAX_MESSAGE_BYTES`) or whose
  ``uid`` is not the one the operating system gave for its connection (a forged sender) closes
  that connection and is named in the report's ``errors[]``; the service and the other helpers go on;
- valid aggregates are merged into the window and the sender's id is listed (``input.helper_uids``).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from farmwatch.contract import InputSource

from .helper_protocol import MAX_MESSAGE_BYTES, HelperMessage, InputAggregate

log = logging.getLogger(__name__)

MAX_REFUSALS = 20  # refusals named per window; more are counted in one line
MAX_HELPERS_PER_USER = 4  # a user has one helper per desktop session; more connections are refused


class AggregateSink(Protocol):
    """Where helpers' aggregates go: :meth:`InputStats.merge` behind the probe's lock."""

    def merge(self, part: InputAggregate) -> None: ...


@dataclass
class _Helper:
    uid: int
    pending: bytearray = field(default_factory=bytearray)


class HelperListener(ABC):
    """Merges helpers' messages into ``sink``; a subclass runs the transport in a background thread
    and calls :meth:`_admit`, :meth:`_received` and :meth:`_left` for each connection."""

    def __init__(self, address: str, sink: AggregateSink) -> None:
        self.address = address  # the socket path or pipe name, as errors name it
        self.sink = sink
        self.failure: str | None = None  # why the transport's loop ended on its own, if it did
        self._helpers: dict[Hashable, _Helper] = {}
        self._lock = threading.Lock()
        self._senders: set[int] = set()  # uids connected at some time in this window
        self._refusals: list[str] = []
        self._refused = 0
        self._devices: set[str] = set()
        self._source: InputSource | None = None

    @abstractmethod
    def start(self) -> None:
        """Listen; raises OSError saying why not (another process listens there, ...)."""

    @abstractmethod
    def stop(self) -> None:
        """Close every connection and the listening end."""

    @property
    def source(self) -> InputSource | None:
        """The listener the most recent helper message came from (x11, evdev, pynput)."""
        return self._source

    def device_names(self) -> list[str]:
        """Injecting devices the helpers named in this window (X devices such as xrdp's)."""
        with self._lock:
            return sorted(self._devices)

    def take_window(self) -> tuple[set[int], list[str]]:
        """The uids whose helpers were connected in the window now ending, and the refusals in it;
        the next window starts with the helpers connected now."""
        with self._lock:
            senders, refusals = self._senders, self._refusals
            if self._refused > len(refusals):
                refusals = [*refusals, f"... and {self._refused - len(refusals)} more refused input helper messages"]
            self._senders = {helper.uid for helper in self._helpers.values()}
            self._refusals, self._refused, self._devices = [], 0, set()
            return senders, refusals

    def _admit(self, connection: Hashable, uid: int) -> bool:
        """Take a new connection from ``uid``; False (after saying why) when that user has enough."""
        if sum(helper.uid == uid for helper in list(self._helpers.values())) >= MAX_HELPERS_PER_USER:
            self._refuse(f"input helper of uid {uid} refused: that user already has {MAX_HELPERS_PER_USER} "
                         "connected")
            return False
        with self._lock:
            self._helpers[connection] = _Helper(uid)
            self._senders.add(uid)
        log.debug("input helper of uid %d connected", uid)
        return True

    def _received(self, connection: Hashable, chunk: bytes) -> bool:
        """Bytes read from an admitted connection; False (after saying why) when it must be closed."""
        helper = self._helpers[connection]
        helper.pending += chunk
        while (end := helper.pending.find(b"\n")) >= 0:
            line = bytes(helper.pending[:end])
            del helper.pending[:end + 1]
            if not self._handle(helper, line):
                return False
        if len(helper.pending) > MAX_MESSAGE_BYTES:
            self._refuse_oversized(helper)
            return False
        return True

    def _left(self, connection: Hashable) -> None:
        with self._lock:
            self._helpers.pop(connection, None)

    def _handle(self, helper: _Helper, line: bytes) -> bool:
        """Merge one message; False (after saying why) when it is refused."""
        if len(line) > MAX_MESSAGE_BYTES:
            self._refuse_oversized(helper)
            return False
        try:
            message = HelperMessage.model_validate_json(line)
        except ValidationError as invalid:
            first = invalid.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "message"
            self._refuse(f"input helper of uid {helper.uid}: invalid message ({where}: {first['msg']}); "
                         "connection closed")
            return False
        if message.uid != helper.uid:
            self._refuse(f"input helper of uid {helper.uid} sent aggregates claiming uid {message.uid}; "
                         "refused and connection closed")
            return False
        self.sink.merge(message.aggregate)
        with self._lock:
            self._senders.add(helper.uid)
            self._devices.update(message.virtual_devices)
            self._source = message.source
        return True

    def _refuse_oversized(self, helper: _Helper) -> None:
        self._refuse(f"input helper of uid {helper.uid}: a message longer than {MAX_MESSAGE_BYTES} bytes; "
                     "connection closed")

    def _refuse(self, why: str) -> None:
        log.warning("%s", why)
        with self._lock:
            self._refused += 1
            if len(self._refusals) < MAX_REFUSALS:
                self._refusals.append(why)
