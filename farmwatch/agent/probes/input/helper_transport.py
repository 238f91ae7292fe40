"""The one place that picks how per-user input helpers reach the agent's service on this platform.

macOS and Linux: a Unix socket (:mod:`.helper_socket`), the sender named by the kernel's peer
credentials. Windows: a named pipe (:mod:`.helper_pipe`), the sender named by the client
process's token. Both ends speak :mod:`.helper_protocol` and are checked by
:class:`.helper_listener.HelperListener`; only the transport differs.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Protocol

from .helper_listener import AggregateSink, HelperListener


class ServiceConnection(Protocol):
    """The helper's end of one connection to the service (a socket or a pipe handle)."""

    def sendall(self, data: bytes, /) -> None: ...

    def close(self) -> None: ...


def service_listener(address: Path, sink: AggregateSink, group: str | None,
                     platform: str = sys.platform) -> HelperListener:
    """The service's listener for ``address`` (``input_helper_socket``), not yet started."""
    if platform == "win32":
        from .helper_pipe import NamedPipeListener

        return NamedPipeListener(str(address), sink)
    from .helper_socket import HelperSocketListener

    return HelperSocketListener(address, sink, group)


def connect_to_service(address: Path) -> ServiceConnection:
    """A connection from this helper to the service; raises OSError when the service is not there."""
    if sys.platform == "win32":  # sys.platform itself, so mypy --platform checks each branch where it runs
        from .helper_pipe import PipeConnection

        return PipeConnection(str(address))
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(address))
    except OSError:
        connection.close()
        raise
    return connection


def current_user_id() -> int:
    """The id this helper's messages claim, which the service checks against the transport's own:
    the uid on Unix; on Windows the RID of this process's user SID."""
    if sys.platform == "win32":
        from .helper_pipe import current_user_rid

        return current_user_rid()
    return os.getuid()
