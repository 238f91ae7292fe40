"""Linux kernel input listener: the evdev nodes ``/dev/input/event*``, reduced at once to timing.

For what the X11 listener cannot reach: an agent running as a system service with no X session to
join, Wayland sessions and text consoles. Every keyboard and pointer the kernel knows is read
directly, which needs read access to ``/dev/input`` (root, or the ``input`` group). Devices created
in software through uinput live under ``/sys/devices/virtual/``; their events count as injected.

Blind spot: input injected inside a display server (XTest, xrdp, Wayland remote-desktop portals)
never passes through the kernel, so the X11 listener is preferred whenever a display is reachable.

Cost: events are read in batches. After a wake-up the loop waits :data:`BATCH_SECONDS` before it
reads again, so the kernel queues a 1000 Hz mouse's frames ten at a time instead of waking the
agent for each; the timing aggregates do not change, since every event carries the kernel's own
time stamp, not the time it was read (bench/input_listener_cost.py measures the share of a core).
A device too fast for that (its queue overflows) turns the wait off for a while.

Privacy: a key's code is looked at only to tell a key from a mouse button and is then dropped;
absolute positions (touchpads, tablets) only tell that the pointer moved.

Kernel ABI: ``struct input_event`` in ``linux/input.h`` (a ``timeval`` then type, code, value);
event types and codes from ``linux/input-event-codes.h``; capability bitmaps as printed under
``/sys/class/input/*/device/capabilities/`` (hex words of ``unsigned long``, most significant first).
"""

from __future__ import annotations

import fcntl
import math
import os
import selectors
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from .stats import InputSink

INPUT_EVENT = struct.Struct("@llHHi")  # struct timeval {long, long}; __u16 type, code; __s32 value
EV_SYN, EV_KEY, EV_REL, EV_ABS = 0x00, 0x01, 0x02, 0x03
SYN_REPORT, SYN_DROPPED = 0, 3
KEY_A = 30  # any real keyboard has it; power buttons, lid and video-bus "keyboards" do not
BUTTONS = range(0x100, 0x160)  # BTN_MISC .. BTN_GEAR_UP: mouse, joystick and digitizer buttons
TOUCH_STATE = range(0x140, 0x150)  # BTN_TOOL_* and BTN_TOUCH: a finger or pen is down, not a click
REL_X, REL_Y, REL_HWHEEL, REL_WHEEL = 0x00, 0x01, 0x06, 0x08
ABS_X, ABS_Y = 0x00, 0x01
KEY_PRESS = 1  # 0 is a release, 2 an auto-repeat: neither is a keystroke
EVIOCSCLOCKID = 0x400445A0  # _IOW('E', 0xa0, int): stamp events with CLOCK_MONOTONIC, as InputStats wants
BATCH_SECONDS = 0.01
"""How long the kernel queues a device's events between two reads. A 1000 Hz mouse fills 10 frames
(30 events) meanwhile, inside the smallest per-reader queue evdev allocates (64 events,
EVDEV_MIN_BUFFER_SIZE in drivers/input/evdev.c; a mouse's is 128): nothing is dropped, and the
reader wakes at most 100 times a second instead of once per frame. A faster device (a 4000 or
8000 Hz gaming mouse) can overflow its queue meanwhile: the kernel says so with SYN_DROPPED, and
the listener then reads without waiting for :data:`UNBATCHED_SECONDS`."""
UNBATCHED_SECONDS = 10.0  # after a queue overflowed, read every event as it comes for this long
READ_EVENTS = 512  # events taken per read(): more than any evdev queue holds, so one read empties it


def capability_bits(text: str) -> set[int]:
    """The bit numbers set in a sysfs capability bitmap such as ``"1f0000 0 0 0 0"``."""
    bits: set[int] = set()
    width = struct.calcsize("@L") * 8
    for position, word in enumerate(reversed(text.split())):
        value = int(word, 16)
        bits.update(position * width + bit for bit in range(width) if value >> bit & 1)
    return bits


@dataclass(frozen=True)
class EventDevice:
    """One evdev node worth listening to."""

    node: str  # e.g. "event3"
    name: str
    injected: bool  # created in software (uinput)


def input_devices(sys_root: Path) -> list[EventDevice]:
    """Keyboards and pointers listed under ``<sys_root>/class/input`` (switches, buttons, sensors left out)."""
    found = []
    for event in sorted((sys_root / "class" / "input").glob("event*")):
        device = event / "device"
        try:
            name = (device / "name").read_text(errors="replace").strip()
            caps = {kind: capability_bits(_read(device / "capabilities" / kind)) for kind in ("ev", "key", "rel", "abs")}
            where = os.path.realpath(device)
        except (OSError, ValueError):
            continue  # unplugged while we looked, or not an input device at all
        keyboard = EV_KEY in caps["ev"] and KEY_A in caps["key"]
        mouse = EV_REL in caps["ev"] and {REL_X, REL_Y} <= caps["rel"]
        touchpad = EV_ABS in caps["ev"] and {ABS_X, ABS_Y} <= caps["abs"] and bool(caps["key"] & set(BUTTONS))
        if keyboard or mouse or touchpad:
            found.append(EventDevice(event.name, name, "/devices/virtual/" in where))
    return found


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else "0"


@dataclass
class _Reading:
    """A device being read, and the motion of the event frame in progress."""

    device: EventDevice
    fd: int
    dx: float = 0.0
    dy: float = 0.0
    moved_absolute: bool = False
    dropping: bool = False  # after SYN_DROPPED the kernel lost events: skip to the next frame
    pending: bytes = field(default=b"", repr=False)


class EvdevInputListener:
    """Reads every keyboard and pointer node in a background thread and feeds a sink with times only."""

    source: ClassVar[Literal["evdev"]] = "evdev"  # named in the report's input section

    def __init__(self, sink: InputSink, sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev"),
                 rescan_seconds: float = 10.0) -> None:
        self.sink = sink
        self.sys_root = sys_root
        self.dev_root = dev_root
        self.rescan_seconds = rescan_seconds  # how soon a plugged-in keyboard or mouse is picked up
        self._selector = selectors.DefaultSelector()
        self._reading: dict[str, _Reading] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None  # never set: an unplugged node is reopened by the rescan
        self.reads = 0  # read() calls on ready devices so far: how often the listener woke to work
        self._overflowed_at = -math.inf  # monotonic time a device's queue last overflowed (SYN_DROPPED)

    def start(self) -> None:
        """Open the nodes; raises OSError saying why when there is nothing to read."""
        devices = input_devices(self.sys_root)
        if not devices:
            raise OSError(f"no keyboard or pointer under {self.sys_root / 'class' / 'input'}")
        refused = self._open(devices)
        if not self._reading:
            raise OSError(f"cannot read any input device: {'; '.join(refused)} (the agent needs root or the input group)")
        self._thread = threading.Thread(target=self._run, name="farmwatch-evdev-input", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for node in list(self._reading):
            self._close(node)
        self._selector.close()

    def device_names(self) -> list[str]:
        """None of its own: the kernel's injecting devices are uinput ones, which the probe lists from sysfs."""
        return []

    def _open(self, devices: list[EventDevice]) -> list[str]:
        refused = []
        for device in devices:
            if device.node in self._reading:
                continue
            path = self.dev_root / "input" / device.node
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as error:
                refused.append(f"{path}: {error.strerror}")
                continue
            try:
                fcntl.ioctl(fd, EVIOCSCLOCKID, struct.pack("@i", time.CLOCK_MONOTONIC))
            except OSError:
                pass  # not an evdev node (a replayed recording): its stamps are used as they are
            self._reading[device.node] = _Reading(device, fd)
            self._selector.register(fd, selectors.EVENT_READ, device.node)
        return refused

    def _close(self, node: str) -> None:
        reading = self._reading.pop(node)
        self._selector.unregister(reading.fd)
        os.close(reading.fd)

    def _run(self) -> None:
        next_scan = time.monotonic() + self.rescan_seconds
        while not self._stop.is_set():
            ready = self._selector.select(timeout=0.2)
            for key, _ in ready:
                self._drain(key.data)
            self.reads += len(ready)
            if ready and time.monotonic() - self._overflowed_at > UNBATCHED_SECONDS:
                time.sleep(BATCH_SECONDS)  # let the kernel queue the next frames: one read takes them all
            if time.monotonic() >= next_scan:
                self._open(input_devices(self.sys_root))
                next_scan = time.monotonic() + self.rescan_seconds

    def _drain(self, node: str) -> None:
        reading = self._reading[node]
        try:
            chunk = os.read(reading.fd, INPUT_EVENT.size * READ_EVENTS)
        except BlockingIOError:
            return
        except OSError:  # ENODEV: unplugged; a later rescan reopens it if it comes back
            self._close(node)
            return
        if not chunk:  # end of file: the node is gone
            self._close(node)
            return
        data = reading.pending + chunk
        whole = len(data) - len(data) % INPUT_EVENT.size
        reading.pending = data[whole:]
        for seconds, micros, kind, code, value in INPUT_EVENT.iter_unpack(data[:whole]):
            self._handle(reading, seconds + micros / 1e6, kind, code, value)

    def _handle(self, reading: _Reading, at: float, kind: int, code: int, value: int) -> None:
        injected = reading.device.injected
        if kind == EV_SYN:
            if code == SYN_DROPPED:
                reading.dropping = True
                self._overflowed_at = time.monotonic()
            elif code == SYN_REPORT:
                if not reading.dropping and (reading.dx or reading.dy):
                    self.sink.move(at, math.hypot(reading.dx, reading.dy), injected)
                elif not reading.dropping and reading.moved_absolute:
                    self.sink.move(at, None, injected)  # device units, not pixels: distance unknown
                reading.dx = reading.dy = 0.0
                reading.moved_absolute = reading.dropping = False
            return
        if reading.dropping:
            return
        if kind == EV_KEY and value == KEY_PRESS:
            if code in TOUCH_STATE:
                return
            if code in BUTTONS:
                self.sink.button(at, injected)
            else:
                self.sink.key(at, injected)
        elif kind == EV_REL:
            if code == REL_X:
                reading.dx += value
            elif code == REL_Y:
                reading.dy += value
            elif code in (REL_WHEEL, REL_HWHEEL):
                self.sink.button(at, injected)  # a wheel step, as X11 reports it (buttons 4-7)
        elif kind == EV_ABS and code in (ABS_X, ABS_Y):
            reading.moved_absolute = True
