"""The named pipe transport of the per-user input helpers (Windows).

The agent's service runs as LocalSystem in session 0, which has no desktop and sees no user's
input, so each signed-in user's ``farmwatch-agent-helper.exe input-helper`` (started at sign-in
by a Scheduled Task, deploy/agent/windows/) sends its aggregates to the service over a named pipe,
the Windows sibling of :mod:`.helper_socket`. Messages are checked and merged by
:class:`.helper_listener.HelperListener`, as on macOS and Linux.

Who may send, and who sent:
- the service creates the pipe with ``FILE_FLAG_FIRST_PIPE_INSTANCE``: if another process made a
  pipe of that name first (to receive the helpers' messages itself), the service refuses to start
  listening and says so, rather than sharing the name;
- the pipe's DACL gives SYSTEM full control and Authenticated Users only ``FILE_WRITE_DATA`` (with
  the ``SYNCHRONIZE | FILE_READ_ATTRIBUTES`` every CreateFile asks for): they can write to an
  instance the service made, never read one or create another (``GENERIC_WRITE`` would include
  ``FILE_CREATE_PIPE_INSTANCE``); ``PIPE_REJECT_REMOTE_CLIENTS`` keeps other machines out;
- the sender is the user of the client's process token (``GetNamedPipeClientProcessId``, then
  ``OpenProcessToken``), read when the connection is made, as the kernel's peer credentials are on
  Unix. The id recorded (``uid`` in messages, ``input.helper_uids`` in reports) is the last
  sub-authority of that user's SID, its RID: a number like a Unix uid (local accounts from 1000),
  never a name. Two accounts from different domains can share a RID; the report counts them as one.
  Loopback TCP was not used: it carries no sender identity.

pywin32 is in the agent's dependencies on Windows only; elsewhere this module still loads (and is
type-checked against pywin32's stubs), and every entry point raises ``OSError`` saying why.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .helper_listener import AggregateSink, HelperListener
from .helper_protocol import MAX_MESSAGE_BYTES

try:  # pywin32 (the agent extra on Windows); its stubs let mypy check this module on every platform
    import pywintypes
    import win32api
    import win32con
    import win32event
    import win32file
    import win32pipe
    import win32security
    import winerror

    _NO_PIPES: str | None = None
except ImportError as missing:
    _NO_PIPES = f"named pipes need pywin32, which is for Windows: {missing}"

if TYPE_CHECKING:
    import _win32typing

PIPE_PREFIX = "\\\\.\\pipe\\"
DEFAULT_PIPE = PIPE_PREFIX + "farmwatch-agent-input"
# Every wait covers the stop event, one pending ConnectNamedPipe and each helper's pending read;
# WaitForMultipleObjects takes at most MAXIMUM_WAIT_OBJECTS (64) handles (<winnt.h>).
MAX_CONNECTIONS = 62
# SYSTEM and the service's own account (SYSTEM too, when installed): full control, which includes
# FILE_CREATE_PIPE_INSTANCE for each next instance. Authenticated Users: FILE_WRITE_DATA 0x2 |
# FILE_READ_ATTRIBUTES 0x80 | SYNCHRONIZE 0x100000 (<winnt.h>), the least a writing client is granted.
PIPE_SDDL = "D:P(A;;GA;;;SY)(A;;GA;;;{service})(A;;0x00100082;;;AU)"
CLIENT_ACCESS = 0x00000002  # FILE_WRITE_DATA
PIPE_BUSY_WAIT_MS = 2000


def _os_error(error: Exception) -> OSError:
    """pywin32's error (not an OSError) as one, keeping the Windows error code and its words."""
    code, function, words = (getattr(error, name, None) for name in ("winerror", "funcname", "strerror"))
    return OSError(code or 0, f"{function}: {words}" if function else str(error))


def _user_sid(token: int) -> _win32typing.PySID:
    sid: _win32typing.PySID = win32security.GetTokenInformation(token, win32security.TokenUser)[0]
    return sid


def _rid(sid: _win32typing.PySID) -> int:
    """The last sub-authority of the SID: S-1-5-21-<machine or domain>-<RID>."""
    return int(win32security.ConvertSidToStringSid(sid).rsplit("-", 1)[1])


def _own_sid() -> _win32typing.PySID:
    return _user_sid(win32security.OpenProcessToken(win32api.GetCurrentProcess(), win32con.TOKEN_QUERY))


def current_user_rid() -> int:
    """This process's user, as the service will see it: the RID of its token's user SID."""
    if _NO_PIPES:
        raise OSError(_NO_PIPES)
    try:
        return _rid(_own_sid())
    except pywintypes.error as error:
        raise _os_error(error) from None


def client_rid(pipe: int) -> int:
    """The user of the process at the other end of a connected pipe instance (the service's view)."""
    if _NO_PIPES:
        raise OSError(_NO_PIPES)
    try:
        pid = win32pipe.GetNamedPipeClientProcessId(pipe)
        process = win32api.OpenProcess(win32con.PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        try:
            token = win32security.OpenProcessToken(process, win32con.TOKEN_QUERY)
            return _rid(_user_sid(token))
        finally:
            win32api.CloseHandle(process)
    except pywintypes.error as error:
        raise _os_error(error) from None


class PipeConnection:
    """The helper's end: writes whole messages to the service's pipe."""

    def __init__(self, name: str) -> None:
        if _NO_PIPES:
            raise OSError(_NO_PIPES)
        try:
            self._handle = self._open(name)
        except pywintypes.error as error:
            raise _os_error(error) from None

    @staticmethod
    def _open(name: str) -> _win32typing.PyHANDLE:
        """Open the pipe; while every instance is taken (helpers of several users signing in at
        once), wait up to PIPE_BUSY_WAIT_MS for the service to make the next."""
        while True:
            try:
                return win32file.CreateFile(name, CLIENT_ACCESS, 0, None, win32con.OPEN_EXISTING, 0, None)
            except pywintypes.error as error:
                if error.winerror != winerror.ERROR_PIPE_BUSY:
                    raise
            win32pipe.WaitNamedPipe(name, PIPE_BUSY_WAIT_MS)  # raises ERROR_SEM_TIMEOUT when none came

    def sendall(self, data: bytes) -> None:
        try:
            while data:
                _rc, written = win32file.WriteFile(self._handle.handle, data)
                data = data[written:]
        except pywintypes.error as error:
            raise _os_error(error) from None

    def close(self) -> None:
        self._handle.Close()


@dataclass(eq=False)  # one per pipe instance; hashed by identity as a connection key
class _Instance:
    handle: int  # a PyHANDLE, which the stubs call int
    overlapped: _win32typing.PyOVERLAPPED  # with its own manual-reset event
    buffer: memoryview | None = None  # the pending read's buffer
    pending: bool = False  # an overlapped ConnectNamedPipe or ReadFile not yet completed


class NamedPipeListener(HelperListener):
    """Accepts helpers on the pipe ``name``, one overlapped instance each, all in one background thread
    (which issues every I/O, so it alone can cancel it: CancelIo is per thread)."""

    def __init__(self, name: str, sink: AggregateSink) -> None:
        super().__init__(name, sink)
        self._stop_event: int | None = None
        self._waiting: _Instance | None = None  # the instance a ConnectNamedPipe waits on
        self._connections: list[_Instance] = []
        self._thread: threading.Thread | None = None
        self._sddl = ""

    def start(self) -> None:
        if _NO_PIPES:
            raise OSError(_NO_PIPES)
        try:
            self._sddl = PIPE_SDDL.format(service=win32security.ConvertSidToStringSid(_own_sid()))
            self._stop_event = win32event.CreateEvent(None, True, False, None)
            self._waiting = self._create(first=True)
        except pywintypes.error as error:
            if error.winerror == winerror.ERROR_ACCESS_DENIED:
                raise OSError(error.winerror, f"another process already has the pipe {self.address}; not sharing "
                              "it (FILE_FLAG_FIRST_PIPE_INSTANCE)") from None
            raise _os_error(error) from None
        self._thread = threading.Thread(target=self._run, name="farmwatch-input-helpers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stop_event is None:
            return
        win32event.SetEvent(self._stop_event)
        if self._thread is not None:
            self._thread.join(timeout=5)
        win32api.CloseHandle(self._stop_event)
        self._stop_event = None

    def _create(self, first: bool = False) -> _Instance:
        """A new instance of the pipe (the first one refused if the name is taken)."""
        attributes = win32security.SECURITY_ATTRIBUTES()
        attributes.SECURITY_DESCRIPTOR = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
            self._sddl, win32security.SDDL_REVISION_1)
        open_mode = win32pipe.PIPE_ACCESS_INBOUND | win32file.FILE_FLAG_OVERLAPPED
        if first:
            open_mode |= win32pipe.FILE_FLAG_FIRST_PIPE_INSTANCE
        handle = win32pipe.CreateNamedPipe(
            self.address, open_mode,
            win32pipe.PIPE_TYPE_BYTE | win32pipe.PIPE_READMODE_BYTE | win32pipe.PIPE_WAIT
            | win32pipe.PIPE_REJECT_REMOTE_CLIENTS,
            win32pipe.PIPE_UNLIMITED_INSTANCES, 0, MAX_MESSAGE_BYTES, 0, attributes)
        overlapped = pywintypes.OVERLAPPED()
        overlapped.hEvent = win32event.CreateEvent(None, True, False, None)
        return _Instance(handle, overlapped)

    def _wait_for_client(self, instance: _Instance) -> None:
        while True:
            try:
                result = win32pipe.ConnectNamedPipe(instance.handle, instance.overlapped)
                break
            except pywintypes.error as error:
                if error.winerror != winerror.ERROR_NO_DATA:
                    raise
                win32pipe.DisconnectNamedPipe(instance.handle)  # a client came and went already: wait anew
        connected = result == winerror.ERROR_PIPE_CONNECTED  # else ERROR_IO_PENDING (or 0)
        instance.pending = not connected
        if connected:  # a client came between CreateNamedPipe and ConnectNamedPipe: no completion will signal
            win32event.SetEvent(instance.overlapped.hEvent)

    def _run(self) -> None:
        assert self._stop_event is not None
        try:
            if self._waiting is not None:
                self._wait_for_client(self._waiting)
            while True:
                waiting = [self._waiting] if self._waiting is not None else []
                instances: list[_Instance] = [*waiting, *self._connections]
                events = [self._stop_event, *(instance.overlapped.hEvent for instance in instances)]
                which = win32event.WaitForMultipleObjects(events, False, win32event.INFINITE) - win32event.WAIT_OBJECT_0
                if which == 0:
                    return
                instance = instances[which - 1]
                win32event.ResetEvent(instance.overlapped.hEvent)
                connecting = instance is self._waiting
                if connecting:
                    self._accept(instance)
                else:
                    self._read(instance)
        except pywintypes.error as error:  # the listening side failed: the probe says so and reopens it
            self.failure = f"input helper pipe {self.address} failed: {_os_error(error)}"
        finally:
            for instance in [*self._connections, *([self._waiting] if self._waiting is not None else [])]:
                self._close(instance)
            self._connections, self._waiting = [], None

    def _completed(self, instance: _Instance) -> int | None:
        """Bytes the finished I/O moved; None when it failed (the client went away)."""
        instance.pending = False
        try:
            return int(win32file.GetOverlappedResult(instance.handle, instance.overlapped, False))
        except pywintypes.error:  # ERROR_BROKEN_PIPE, ERROR_NO_DATA: the helper closed its end
            return None

    def _accept(self, instance: _Instance) -> None:
        connected = not instance.pending or self._completed(instance) is not None
        # The next helper waits on a fresh instance; past MAX_CONNECTIONS, helpers retry at their next flush.
        self._waiting = None
        if len(self._connections) + 1 < MAX_CONNECTIONS:
            self._waiting = self._create()
            self._wait_for_client(self._waiting)
        if not connected:
            self._close(instance)
            return
        try:
            uid = client_rid(instance.handle)
        except OSError as error:
            self._refuse(f"an input helper on {self.address} was refused: its user is unknown ({error})")
            self._close(instance)
            return
        if not self._admit(instance, uid):
            self._close(instance)
            return
        self._connections.append(instance)
        self._post_read(instance)

    def _post_read(self, instance: _Instance) -> None:
        """Start an overlapped read; its event is set when bytes (or the end) arrive."""
        instance.buffer = win32file.AllocateReadBuffer(MAX_MESSAGE_BYTES)
        instance.pending = True
        try:
            win32file.ReadFile(instance.handle, instance.buffer, instance.overlapped)
        except pywintypes.error:  # the helper already went away: the next wait sees its end
            instance.pending = False
            win32event.SetEvent(instance.overlapped.hEvent)

    def _read(self, instance: _Instance) -> None:
        count = self._completed(instance) if instance.pending else None
        chunk = bytes(instance.buffer[:count]) if count and instance.buffer is not None else b""
        if not chunk or not self._received(instance, chunk):
            self._drop(instance)
            return
        self._post_read(instance)

    def _drop(self, instance: _Instance) -> None:
        self._left(instance)
        self._connections.remove(instance)
        self._close(instance)
        if self._waiting is None:
            self._waiting = self._create()
            self._wait_for_client(self._waiting)

    @staticmethod
    def _close(instance: _Instance) -> None:
        """Cancel what is pending, wait until the kernel lets go of the buffer, then close."""
        if instance.pending:
            try:
                win32file.CancelIo(instance.handle)
                win32file.GetOverlappedResult(instance.handle, instance.overlapped, True)
            except pywintypes.error:
                pass  # ERROR_OPERATION_ABORTED: cancelled, as asked
            instance.pending = False
        try:
            win32pipe.DisconnectNamedPipe(instance.handle)
        except pywintypes.error:
            pass  # never connected
        win32file.CloseHandle(instance.handle)
        win32api.CloseHandle(instance.overlapped.hEvent)
