"""Input timing: how the keyboard and mouse are being used, never what is typed.

Why security cares: remote control reshapes input. Injected events (XTest, xrdp, uinput on
Linux; the OS's injected flags on Windows/macOS), bursts of keys arriving together, mouse moves
at network rate and in jumps are what a person driving the laptop from abroad leaves behind
(see :mod:`farmwatch.agent.probes.input.stats` for the definitions and sources).

A listener runs inside the agent from ``start()`` to ``stop()``; ``collect()`` returns the
window's aggregates and starts the next window. Linux: X11 through XInput2 raw events on
``DISPLAY`` (or ``probe_options.input.display``; without either, as a service, the display and
cookie a desktop session's processes name: :mod:`farmwatch.agent.probes.input.x11_session`), else the
kernel's evdev nodes (root or the input group; Wayland, consoles, a service without a
display); ``probe_options.input.source`` = ``x11`` or ``evdev`` forces one. Windows/macOS:
pynput. The section names its ``source``. uinput devices under
``<sys_root>/devices/virtual/input`` are reported as ``virtual_devices``. Without any listener it
may use, ``collect()`` raises ``ProbeUnavailable`` with the reason and the rest of the report
still goes out.

Per-user helpers: with ``input_helper_socket`` in the agent's config the probe reads no input
itself; it takes the aggregates the signed-in users' ``farmwatch-agent input-helper`` processes
send over that socket (:mod:`.helper_socket`; a named pipe on Windows, :mod:`.helper_pipe`), and the section lists their uids in
``helper_uids``. A helper is this same probe in the user's session: :meth:`InputTimingProbe.drain`
hands its aggregates over (:mod:`.helper`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Literal

from farmwatch.agent.probes.base import Probe, ProbeContext, ProbeOptions, ProbeUnavailable
from farmwatch.contract import InputSource, InputTiming

from .helper_protocol import InputAggregate
from .helper_listener import HelperListener
from .helper_transport import service_listener
from .listener import Listener
from .stats import InputStats


class _LockedStats:
    """The listener thread records while ``collect()`` reads and resets: one lock between them."""

    def __init__(self, stats: InputStats) -> None:
        self._stats = stats
        self._lock = threading.Lock()

    def key(self, at: float, injected: bool = False) -> None:
        with self._lock:
            self._stats.key(at, injected)

    def button(self, at: float, injected: bool = False) -> None:
        with self._lock:
            self._stats.button(at, injected)

    def move(self, at: float, distance: float | None, injected: bool = False) -> None:
        with self._lock:
            self._stats.move(at, distance, injected)

    def merge(self, part: InputAggregate) -> None:
        with self._lock:
            self._stats.merge(part)

    def drain(self) -> InputAggregate:
        with self._lock:
            return self._stats.drain()

    def events(self) -> int:
        with self._lock:
            return self._stats.key_events + self._stats.mouse_events

    def take(self, seconds_observed: float, virtual_devices: list[str], source: InputSource | None) -> InputTiming:
        """The window's summary; the next window starts empty."""
        with self._lock:
            summary = self._stats.summary(seconds_observed, virtual_devices, source)
            self._stats.reset()
            return summary


def uinput_device_names(sys_root: Path) -> list[str]:
    """Names of input devices created in software (uinput), e.g. by a remote-control tool."""
    names = []
    for name_file in sorted((sys_root / "devices" / "virtual" / "input").glob("input*/name")):
        try:
            names.append(name_file.read_text(encoding="utf-8", errors="replace").strip())
        except OSError:
            continue
    return [name for name in names if name]


class InputOptions(ProbeOptions):
    display: str | None = None  # an X display to listen on; None: DISPLAY, else the desktop sessions'
    source: Literal["auto", "x11", "evdev"] = "auto"  # force one listener on Linux


class InputTimingProbe(Probe[InputTiming]):
    name = "input"
    section = "input"

    def __init__(self, context: ProbeContext) -> None:
        super().__init__(context)
        self._recorder = _LockedStats(InputStats())
        self._listener: Listener | None = None
        self._unavailable: str | None = None
        self._window_start: float | None = None

    def start(self) -> None:
        if self._window_start is not None:
            return
        self._window_start = time.monotonic()
        self._listen()

    def stop(self) -> None:
        self._close()
        self._window_start = None
        self._unavailable = None

    def events_seen(self) -> int:
        """Key and mouse events counted so far in this window (e.g. to wait for a test's input)."""
        return self._recorder.events()

    def collect(self) -> InputTiming:
        """The window's aggregates; a listener that could not start or died is retried for the next."""
        if self._window_start is None:
            raise ProbeUnavailable("the input listener was not started for this window")
        now = time.monotonic()
        seconds, self._window_start = now - self._window_start, now
        listener = self._running_listener()
        names, source = listener.device_names(), listener.source
        if isinstance(listener, HelperListener):
            return self._from_helpers(listener, seconds, names)
        self._check(listener)
        summary = self._recorder.take(seconds, uinput_device_names(self.context.sys_root) + names, source)
        self._prefer_x11()
        return summary

    def drain(self) -> tuple[InputAggregate, InputSource | None, list[str]]:
        """For the per-user helper: what was seen since the last drain, from which listener, and the
        injecting devices present. Raises ``ProbeUnavailable`` while no listener runs (retried)."""
        if self._window_start is None:
            raise ProbeUnavailable("the input listener was not started")
        listener = self._running_listener()
        names, source = listener.device_names(), listener.source
        self._check(listener)
        part = self._recorder.drain()
        self._prefer_x11()
        return part, source, uinput_device_names(self.context.sys_root) + names

    def _running_listener(self) -> Listener:
        if self._listener is None:
            reason = self._unavailable or "the input listener is not running"
            self._listen()  # the display may be there by the next window (a user logged in)
            raise ProbeUnavailable(reason)
        return self._listener

    def _check(self, listener: Listener) -> None:
        """A listener that stopped on its own (e.g. the X session ended) is named and reopened."""
        if listener.failure is not None:
            self.problem(listener.failure)
            self._close()
            self._listen()

    def _from_helpers(self, listener: HelperListener, seconds: float, names: list[str]) -> InputTiming:
        senders, refusals = listener.take_window()
        for refusal in refusals:
            self.problem(refusal)
        self._check(listener)
        summary = self._recorder.take(seconds, uinput_device_names(self.context.sys_root) + names, listener.source)
        if not senders:
            raise ProbeUnavailable(f"no input helper was connected to {listener.address} in this window (nobody "
                                   "signed in, or 'farmwatch-agent input-helper' does not run in the user's session)")
        return summary.model_copy(update={"helper_uids": sorted(senders)})

    def _listen(self) -> None:
        try:
            self._listener = self._open_listener()
            self._unavailable = None
        except ProbeUnavailable as error:
            self._listener = None
            self._unavailable = str(error)

    def _close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._listener = None

    def _options(self) -> InputOptions:
        """Read where the listener is opened; a bad value makes the probe unavailable, saying which."""
        return self.read_options(InputOptions, refuse=True)

    def _prefer_x11(self) -> None:
        """Under ``auto``, take up an X desktop that appeared after the kernel's devices were chosen:
        only X11 sees input injected inside the display server."""
        if self._listener is None or self._listener.source != "evdev" or self._options().source != "auto":
            return
        try:
            x11 = self._open_x11()
        except ProbeUnavailable:
            return
        self._close()
        self._listener = x11

    def _open_listener(self) -> Listener:
        if self.context.input_helper_socket is not None:
            return self._open_helper_socket(self.context.input_helper_socket)
        platform = self.context.platform
        if platform in ("win32", "darwin"):
            return self._open_pynput()
        if platform != "linux":
            raise ProbeUnavailable(f"no input listener for platform {platform}")
        source = self._options().source
        if source == "x11":
            return self._open_x11()
        if source == "evdev":
            return self._open_evdev()
        try:  # X11 first: only it sees input injected inside the display server (XTest, xrdp)
            return self._open_x11()
        except ProbeUnavailable as x11:
            try:
                return self._open_evdev()
            except ProbeUnavailable as evdev:
                raise ProbeUnavailable(f"{x11}; {evdev}") from None

    def _open_x11(self) -> Listener:
        from .x11_session import XSession, x11_sessions

        display = self._options().display or os.environ.get("DISPLAY")
        # A service has no DISPLAY: the desktop session's processes say where it is.
        sessions = [XSession(display, None)] if display else x11_sessions(self.context.proc_root)
        if not sessions:
            raise ProbeUnavailable("no X display to listen on: DISPLAY is not set and no desktop session "
                                   "has an X display (console or Wayland session)")
        try:
            from Xlib.error import DisplayError, XError

            from .x11_listener import X11InputListener
        except ImportError as error:
            raise ProbeUnavailable(f"python-xlib is not installed: {error}") from None
        refusals = []
        for session in sessions:
            listener = X11InputListener(session.display, self._recorder,
                                        lambda: uinput_device_names(self.context.sys_root), session.xauthority)
            try:
                listener.start()
                return listener
            except (OSError, DisplayError, XError) as error:
                refusals.append(f"cannot listen on X display {session.display}: {error}")
        raise ProbeUnavailable("; ".join(refusals))

    def _open_evdev(self) -> Listener:
        from .evdev_listener import EvdevInputListener

        listener = EvdevInputListener(self._recorder, self.context.sys_root, self.context.dev_root)
        try:
            listener.start()
        except OSError as error:
            raise ProbeUnavailable(f"cannot read kernel input devices: {error}") from None
        return listener

    def _open_helper_socket(self, path: Path) -> Listener:
        listener = service_listener(path, self._recorder, self.context.input_helper_group, self.context.platform)
        try:
            listener.start()
        except OSError as error:
            raise ProbeUnavailable(f"cannot listen for input helpers on {path}: {error}") from None
        return listener

    def _open_pynput(self) -> Listener:
        from .pynput_listener import PynputInputListener

        listener = PynputInputListener(self._recorder)
        try:
            listener.start()
        except ImportError as error:
            raise ProbeUnavailable(f"pynput is not installed: {error}") from None
        except OSError as error:  # e.g. macOS without the Input Monitoring permission
            raise ProbeUnavailable(f"cannot listen to input: {error}") from None
        return listener
