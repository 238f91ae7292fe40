"""An agent running as a service finds the desktop's X display and cookie, and prefers X11 once it can.

The real parts: an Xvfb that admits only holders of its cookie, a real "session" process whose
environment names the display and cookie file, xdotool typing through XTest; the kernel keyboard
is replayed (tests/fixtures/evdev_devices.py says why). Discovery is pointed
at a private proc folder holding links to chosen real /proc entries (or, for the parsing cases,
environ files written by the test), so a developer's own desktop never leaks into the result.
"""

from __future__ import annotations

import os
import pwd
import secrets
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from evdev_devices import KEY_A, KEYBOARD, Machine, keys, settle
from xserver import xtool, xvfb

pytest.importorskip("Xlib")

from Xlib.error import DisplayConnectionError  # noqa: E402

from farmwatch.agent.probes.base import ProbeContext  # noqa: E402
from farmwatch.agent.probes.input.probe import InputTimingProbe  # noqa: E402
from farmwatch.agent.probes.input.x11_session import XSession, connect, x11_sessions  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="X11 session discovery reads Linux's /proc")


def xauthority_file(path: Path, cookie: bytes, family: int = 0xFFFF, number: bytes = b"") -> Path:
    """An Xauthority file with one MIT-MAGIC-COOKIE-1 entry ("any host" by default, as GDM writes)."""
    def counted(value: bytes) -> bytes:
        return struct.pack(">H", len(value)) + value

    path.write_bytes(struct.pack(">H", family) + counted(b"") + counted(number)
                     + counted(b"MIT-MAGIC-COOKIE-1") + counted(cookie))
    path.chmod(0o600)
    return path


def environ(proc: Path, pid: int, **variables: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in variables.items()))


def test_sessions_are_read_from_environments_wayland_and_remote_displays_left_out(tmp_path: Path) -> None:
    proc, sockets = tmp_path / "proc", tmp_path / "X11-unix"
    sockets.mkdir()
    for number in (0, 1):
        (sockets / f"X{number}").touch()
    environ(proc, 100, HOME="/home/ana", DISPLAY=":1", XAUTHORITY="/run/user/1000/gdm/Xauthority", LANG="C")
    environ(proc, 101, DISPLAY=":1.0", XAUTHORITY="/run/user/1000/gdm/Xauthority")
    environ(proc, 102, DISPLAY=":1", XAUTHORITY="/run/user/1000/gdm/Xauthority")
    environ(proc, 200, DISPLAY=":0")  # startx: the cookie is in the owner's ~/.Xauthority
    environ(proc, 300, DISPLAY=":0", WAYLAND_DISPLAY="wayland-0", XAUTHORITY="/run/user/1001/.mutter-Xwaylandauth")
    environ(proc, 400, DISPLAY="localhost:10.0")  # ssh X forwarding: not this laptop's desktop
    environ(proc, 500, DISPLAY=":7", XAUTHORITY="/tmp/x7")  # no server socket: a stale variable
    (proc / "self").mkdir()
    home = Path(pwd.getpwuid(os.geteuid()).pw_dir)  # the environ files' owner: whoever runs the test
    found = x11_sessions(proc, sockets)
    assert found[0] == XSession(":1", "/run/user/1000/gdm/Xauthority")  # the most processes first
    assert set(found[1:]) == {XSession(":1.0", "/run/user/1000/gdm/Xauthority"), XSession(":0", str(home / ".Xauthority"))}


@pytest.fixture
def guarded_display(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An Xvfb that admits only clients holding the cookie in the yielded file."""
    cookie_file = xauthority_file(tmp_path / "Xauthority", secrets.token_bytes(16))
    with xvfb(auth=cookie_file) as display:
        yield display, cookie_file


@pytest.mark.slow
def test_the_session_cookie_opens_the_display_and_nothing_else_does(
        guarded_display: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    display, cookie_file = guarded_display
    monkeypatch.delenv("XAUTHORITY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.Xauthority to fall back on
    with pytest.raises(DisplayConnectionError):
        connect(display, None)
    connection = connect(display, str(cookie_file))
    assert connection.screen().root.query_pointer() is not None
    connection.close()
    assert "XAUTHORITY" not in os.environ  # set only while python-xlib read it
    with pytest.raises(OSError, match="holds no cookie for display :"):
        connect(display, str(xauthority_file(tmp_path / "other", b"x" * 16, number=b"4242")))
    with pytest.raises(OSError, match="cannot read the X cookie file"):
        connect(display, str(tmp_path / "missing"))


@pytest.mark.slow
def test_a_service_on_kernel_devices_moves_to_the_desktop_once_one_appears(
        guarded_display: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a service with no DISPLAY: the kernel's devices first (a replayed keyboard), then a
    desktop session starts, and from the next window on the probe listens on its display, where
    XTest typing counts as injected."""
    display, cookie_file = guarded_display
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("XAUTHORITY", raising=False)
    machine = Machine(tmp_path / "laptop")
    machine.plug("event0", KEYBOARD)
    probe = InputTimingProbe(ProbeContext(platform="linux", sys_root=machine.sys_root, dev_root=machine.dev_root,
                                          proc_root=machine.proc_root))
    probe.start()
    session = subprocess.Popen(["sleep", "120"], env={"DISPLAY": display, "XAUTHORITY": str(cookie_file)})
    try:
        machine.write("event0", keys([1.0], [KEY_A]))
        settle(probe.events_seen, 1)
        (machine.proc_root / str(session.pid)).symlink_to(f"/proc/{session.pid}")  # the desktop starts
        before = probe.collect()
        xtool(display, "xdotool", "type", "--delay", "100", "abc", xauthority=cookie_file)
        settle(probe.events_seen, 3)
        after = probe.collect()
    finally:
        probe.stop()
        session.kill()
        session.wait()
        machine.close()
    assert (before.source, before.key_events, before.injected_events) == ("evdev", 1, 0)
    assert (after.source, after.key_events, after.injected_events) == ("x11", 3, 3)
