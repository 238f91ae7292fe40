"""The Unix socket transport of the per-user input helpers (macOS and Linux).

With ``input_helper_socket`` set, the input probe listens here instead of reading input itself
(the macOS LaunchDaemon, or a Linux service that should not read input devices, cannot see the
user's input). Each signed-in user's ``farmwatch-agent input-helper`` connects and sends a
:class:`~.helper_protocol.HelperMessage` every few seconds; :class:`.helper_listener.HelperListener`
checks and merges them. Windows has the named pipe instead (:mod:`.helper_pipe`).

Who may send, and who sent:
- the socket file is ``0600`` (only the service's user) or, with ``input_helper_group``, ``0660``
  and owned by that group (macOS: ``staff``, which every local user is in);
- the kernel names each connection's user: ``SO_PEERCRED`` on Linux, ``LOCAL_PEERCRED`` (a
  ``struct xucred``) on macOS, and that uid is the one a message must claim.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import stat
import struct
import sys
import threading
from pathlib import Path

from .helper_listener import AggregateSink, HelperListener
from .helper_protocol import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

# Linux <asm-generic/socket.h> SO_PEERCRED gives struct ucred {pid_t pid; uid_t uid; gid_t gid}.
_UCRED = struct.Struct("=iII")
# macOS <sys/un.h>: SOL_LOCAL 0, LOCAL_PEERCRED 0x001 give struct xucred {u_int cr_version; uid_t cr_uid;
# short cr_ngroups; gid_t cr_groups[16]} (<sys/ucred.h>), 76 bytes; only its first two fields are read.
_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_SIZE = 0, 0x001, 76
_XUCRED_HEAD = struct.Struct("=II")


def peer_uid(connection: socket.socket, platform: str = sys.platform) -> int:
    """The user id the kernel gives for the process at the other end of a Unix socket."""
    if platform == "linux":
        _pid, uid, _gid = _UCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        return int(uid)
    if platform == "darwin":
        _version, uid = _XUCRED_HEAD.unpack_from(connection.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_SIZE))
        return int(uid)
    raise OSError(f"no peer credentials for Unix sockets on {platform}")


class HelperSocketListener(HelperListener):
    """Accepts helpers on ``path`` in a background thread and merges what they send into ``sink``."""

    def __init__(self, path: Path, sink: AggregateSink, group: str | None = None) -> None:
        super().__init__(str(path), sink)
        self.path = path
        self.group = group  # members may connect (mode 0660); None: only the service's own user (0600)
        self._server: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and listen; raises OSError saying why (another agent listens there, a bad group, ...)."""
        gid = self._gid()
        self._clear_stale_socket()
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True)
            # Reachable by the helpers whatever the service's umask (launchd's Umask 077 would give 0700).
            os.chmod(self.path.parent, 0o755)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # no moment at which the socket is open to everyone
            try:
                server.bind(str(self.path))
            finally:
                os.umask(old_umask)
            if gid is not None:
                os.chown(self.path, -1, gid)
                os.chmod(self.path, 0o660)
            server.listen(16)
            server.setblocking(False)
        except OSError:
            server.close()
            raise
        self._server = server
        self._selector.register(server, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="farmwatch-input-helpers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for connection in list(self._connections):
            self._drop(connection)
        if self._server is not None:
            self._selector.unregister(self._server)
            self._server.close()
            self._server = None
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self._selector.close()

    def _gid(self) -> int | None:
        if self.group is None:
            return None
        import grp  # Unix only; this module is imported on Windows too (the probe names the class)

        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise OSError(f"input_helper_group {self.group!r} is not a group on this machine") from None

    def _clear_stale_socket(self) -> None:
        """Remove a socket left by an agent that died; refuse to take over a live one or another file."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{self.path} exists and is not a socket; not removing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(self.path))
            except (ConnectionRefusedError, FileNotFoundError):
                self.path.unlink(missing_ok=True)
                return
        raise OSError(f"another process already listens on {self.path}")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.2):
                    connection = key.fileobj
                    assert isinstance(connection, socket.socket)
                    if connection is self._server:
                        self._accept()
                    else:
                        self._read(connection)
        except OSError as error:  # the listening socket itself failed: the probe says so and reopens it
            self.failure = f"input helper socket {self.path} failed: {error}"

    def _accept(self) -> None:
        assert self._server is not None
        try:
            connection, _ = self._server.accept()
        except BlockingIOError:
            return
        except OSError as error:  # e.g. out of file descriptors: the helper will try again
            self._refuse(f"could not accept an input helper on {self.path}: {error}")
            return
        try:
            uid = peer_uid(connection)
        except OSError as error:
            self._refuse(f"an input helper on {self.path} was refused: its user is unknown ({error})")
            connection.close()
            return
        if not self._admit(connection, uid):
            connection.close()
            return
        connection.setblocking(False)
        self._connections.add(connection)
        self._selector.register(connection, selectors.EVENT_READ)

    def _read(self, connection: socket.socket) -> None:
        try:
            chunk = connection.recv(MAX_MESSAGE_BYTES)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk or not self._received(connection, chunk):
            self._drop(connection)

    def _drop(self, connection: socket.socket) -> None:
        self._left(connection)
        self._connections.discard(connection)
        try:
            self._selector.unregister(connection)
        except (KeyError, ValueError):
            pass  # never registered (refused at accept)
        connection.close()
