"""Find the desktop's X display and its access cookie, for an agent running as a system service.

A service has no ``DISPLAY`` of its own. The desktop session's processes carry it in their
environment, beside ``XAUTHORITY``, the file holding the cookie that grants access (GDM:
``/run/user/UID/gdm/Xauthority``; LightDM and startx: ``~/.Xauthority``, the default when the
variable is unset). Of each environment only ``DISPLAY``, ``XAUTHORITY`` and ``WAYLAND_DISPLAY``
are kept. Sessions with ``WAYLAND_DISPLAY`` are skipped: their X server is Xwayland, which sees
only what X clients receive, so the kernel's devices tell more. Reading other users'
environments needs root, which a system service has.

python-xlib looks a cookie up only under the local host name, while display managers write
"any host" (FamilyWild) entries, so the cookie is copied into an anonymous in-memory file
(memfd) in the form python-xlib reads; it never touches disk.

Xauthority format: Xau library, ``Xauth.h`` (family, address, number, name, data; each a
big-endian 16-bit length and bytes but the family).
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from Xlib.display import Display

LOCAL_DISPLAY = re.compile(r":(\d+)(?:\.\d+)?")  # ":0", ":1.0"; "host:10" (ssh forwarding) is not the desktop
COOKIE = b"MIT-MAGIC-COOKIE-1"
FAMILY_WILD = 0xFFFF
FAMILY_LOCAL = 256  # Xauth.h FamilyLocal
_ENVIRONMENT = threading.Lock()  # XAUTHORITY is process-wide while python-xlib reads it


@dataclass(frozen=True)
class XSession:
    """A local X display a desktop session uses, and the cookie file its processes name."""

    display: str
    xauthority: str | None  # None: the usual lookup (XAUTHORITY, then ~/.Xauthority)


def x11_sessions(proc_root: Path = Path("/proc"), socket_dir: Path = Path("/tmp/.X11-unix")) -> list[XSession]:
    """The X11 (not Wayland) desktop sessions seen in processes' environments, most processes first;
    only displays whose server socket exists."""
    seen: Counter[XSession] = Counter()
    for process in proc_root.iterdir():
        if not process.name.isdigit():
            continue
        try:
            environ = (process / "environ").read_bytes()
            owner = process.stat().st_uid
        except OSError:
            continue  # gone, or not ours to read
        found = _session(environ, owner)
        if found is not None and (socket_dir / f"X{_number(found.display)}").exists():
            seen[found] += 1
    return [session for session, _ in seen.most_common()]


def _session(environ: bytes, owner: int) -> XSession | None:
    wanted = {}
    for entry in environ.split(b"\0"):
        key, _, value = entry.partition(b"=")
        if key in (b"DISPLAY", b"XAUTHORITY", b"WAYLAND_DISPLAY"):
            wanted[key] = value.decode(errors="replace")
    display = wanted.get(b"DISPLAY", "")
    if b"WAYLAND_DISPLAY" in wanted or not LOCAL_DISPLAY.fullmatch(display):
        return None
    xauthority = wanted.get(b"XAUTHORITY") or _default_xauthority(owner)
    return XSession(display, xauthority) if xauthority else None


def _default_xauthority(uid: int) -> str | None:
    try:
        return os.path.join(pwd.getpwuid(uid).pw_dir, ".Xauthority")
    except KeyError:
        return None


def _number(display: str) -> str:
    matched = LOCAL_DISPLAY.fullmatch(display)
    assert matched is not None
    return matched.group(1)


def connect(display: str, xauthority: str | None) -> Display:
    """Open ``display`` with the cookie for it in ``xauthority`` (None: the usual lookup).

    Raises OSError when the file has no cookie for the display, and python-xlib's errors when the
    server refuses."""
    from Xlib import display as xdisplay  # imported once a display is found: discovery alone stays light

    if xauthority is None:
        return xdisplay.Display(display)
    number = _number(display)
    cookie = _cookie(Path(xauthority), number)
    memory = os.memfd_create("farmwatch-xauthority", os.MFD_CLOEXEC)
    try:
        os.write(memory, _entry(FAMILY_LOCAL, socket.gethostname().encode(), number.encode(), cookie))
        with _xauthority(f"/proc/self/fd/{memory}"):
            return xdisplay.Display(display)
    finally:
        os.close(memory)


def _cookie(path: Path, number: str) -> bytes:
    from Xlib.error import XauthError
    from Xlib.xauth import Xauthority

    host = socket.gethostname().encode()
    try:
        entries = Xauthority(str(path)).entries
    except XauthError as error:  # python-xlib's word for a missing or unreadable file
        raise OSError(f"cannot read the X cookie file {path}: {error}") from None
    for family, address, entry_number, name, data in entries:
        local = family == FAMILY_WILD or (family == FAMILY_LOCAL and address == host)
        if name == COOKIE and local and entry_number in (b"", number.encode()):
            return bytes(data)
    raise OSError(f"{path} holds no cookie for display :{number}")


def _entry(family: int, address: bytes, number: bytes, cookie: bytes) -> bytes:
    def counted(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    return struct.pack(">H", family) + counted(address) + counted(number) + counted(COOKIE) + counted(cookie)


@contextmanager
def _xauthority(path: str) -> Iterator[None]:
    with _ENVIRONMENT:
        saved = os.environ.get("XAUTHORITY")
        os.environ["XAUTHORITY"] = path
        try:
            yield
        finally:
            if saved is None:
                del os.environ["XAUTHORITY"]
            else:
                os.environ["XAUTHORITY"] = saved
