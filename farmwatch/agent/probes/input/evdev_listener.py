"""Linux kernel input listener: the evdev nodes ``/dev/input/event*``, reduced at once to timing.

For what the X11 listener cannot reach: an agent running as a system service with no X session to
join, Wayland sessions and text consoles. Every keyboard and pointer the kernel knows is read
directly, which needs read access to ``/dev/input`` (root, or the ``input`` group). Devices created
in software through uinput live under ``/sys/devices/virtual/``; their events count as injected.

Blind spot: input injected inside a display server (XTest, xrdp, Wayland remote-desktop portals)
never passes through the kernel, so the X11 listener is preferred whenever a display is reachable.

Cost: events are read in batches. After a wake-up the loop waits before it reads again, as long as
the devices that woke it can queue (:func:`queue_events`), so the kernel queues a 1000 Hz mouse's
frames twenty at a time instead of waking the agent for each; the timing aggregates do not change,
since every event carries the kernel's own time stamp, not the time it was read
(bench/input_listener_cost.py measures the share of a core). A device too fast for that (its queue
overflows) turns the wait off for a while.

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
"""How long the kernel queues a device's events between two reads, for the smallest per-reader queue
evdev allocates (64 events, EVDEV_MIN_BUFFER_SIZE in drivers/input/evdev.c); a device with a longer
queue waits as much longer (a mouse's 128: 20 ms); the shortest queue among the devices that woke
the reader sets the wait. A 1000 Hz mouse fills 20 frames (60 events) of its 128 meanwhile; a
device that had nothing to read and starts during that wait fills its queue (64 at least) only
above 3200 events a second, which keyboards and buttons never send: nothing is dropped, and the
reader wakes about 50 times a second instead of once per frame. A faster device (a 4000 or 8000 Hz
gaming mouse) can overflow its queue meanwhile: the kernel says so with SYN_DROPPED, and the
listener then reads without waiting for :data:`UNBATCHED_SECONDS`."""
SMALLEST_QUEUE = 64  # EVDEV_MIN_BUFFER_SIZE: the queue BATCH_SECONDS is sized for
QUEUED_PACKETS = 8  # EVDEV_BUF_PACKETS: evdev queues this many of a device's largest frames
MT_AXES = range(0x2F, 0x3E)  # ABS_MT_SLOT .. ABS_MT_TOOL_Y: counted per touch slot, a number sysfs does not show
UNBATCHED_SECONDS = 10.0  # after a queue overflowed, read every event as it comes for this long
READ_EVENTS = 512  # events taken per read(): a keyboard's or mouse's whole queue; a longer one takes more reads


def capability_bits(text: str) -> set[int]:
    """The bit numbers set in a sysfs capability bitmap such as ``"1f0000 0 0 0 0"``."""
    bits: set[int] = set()
    width = struct.calcsize("@L") * 8
    for position, word in enumerate(reversed(text.split())):
        value = int(word, 16)
        bits.update(position * width + bit for bit in range(width) if value >> bit & 1)
    return bits


def queue_events(caps: dict[str, set[int]]) -> int:
    """How many events the kernel queues at least for one reader of a device with these capabilities.

    evdev_compute_buffer_size (drivers/input/evdev.c): eight of the frames that
    input_estimate_events_per_packet (drivers/input/input.c) expects (a SYN_REPORT, one event per
    relative and absolute axis, seven for keys and MSC, one per touch slot for each multi-touch axis),
    at least 64, rounded up to a power of two. Touch slots count as none here and drivers may ask for
    more: the kernel's queue is never shorter than this.
    """
    axes = len(caps["rel"]) if EV_REL in caps["ev"] else 0
    if EV_ABS in caps["ev"]:
        axes += len(caps["abs"] - set(MT_AXES))
    events = max(QUEUED_PACKETS * (1 + axes + 7), SMALLEST_QUEUE)
    return 1 << (events - 1).bit_length()


@dataclass(frozen=True)
class EventDevice:
    """One evdev node worth listening to."""

    node: str  # e.g. "event3"
    name: str
    injected: bool  # created in software (uinput)
    queue_events: int = SMALLEST_QUEUE  # what the kernel queues for us at least: see queue_events()


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
            found.append(EventDevice(event.name, name, "/devices/virtual/" in where, queue_events(caps)))
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
            # Looked up before the reads, which close an unplugged device's node.
            shortest_queue = min((self._reading[key.data].device.queue_events for key, _ in ready), default=0)
            for key, _ in ready:
                self._drain(key.data)
            self.reads += len(ready)
            if ready and time.monotonic() - self._overflowed_at > UNBATCHED_SECONDS:
                # Let the kernel queue the next frames, as many as the shortest queue that woke us
                # holds at BATCH_SECONDS' pace: one read takes them all.
                time.sleep(BATCH_SECONDS * shortest_queue / SMALLEST_QUEUE)
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
        self._reduce(reading, data[:whole])

    def _reduce(self, reading: _Reading, events: bytes) -> None:
        """Hands the sink the times in whole ``struct input_event`` records. One loop with the frame in
        progress in local variables, the commonest events tested first: a 1000 Hz mouse passes 3000
        events a second through it."""
        sink, injected = self.sink, reading.device.injected
        dx, dy, moved_absolute, dropping = reading.dx, reading.dy, reading.moved_absolute, reading.dropping
        for seconds, micros, kind, code, value in INPUT_EVENT.iter_unpack(events):
            if kind == EV_REL:
                if dropping:
                    continue
                if code == REL_X:
                    dx += value
                elif code == REL_Y:
                    dy += value
                elif code == REL_WHEEL or code == REL_HWHEEL:
                    sink.button(seconds + micros / 1e6, injected)  # a wheel step, as X11 reports it (buttons 4-7)
            elif kind == EV_SYN:
                if code == SYN_REPORT:
                    if not dropping and (dx or dy):
                        sink.move(seconds + micros / 1e6, math.hypot(dx, dy), injected)
                    elif not dropping and moved_absolute:
                        sink.move(seconds + micros / 1e6, None, injected)  # device units, not pixels: distance unknown
                    dx = dy = 0.0
                    moved_absolute = dropping = False
                elif code == SYN_DROPPED:
                    dropping = True
                    self._overflowed_at = time.monotonic()
            elif dropping:
                continue
            elif kind == EV_KEY:
                if value != KEY_PRESS or code in TOUCH_STATE:
                    continue
                if code in BUTTONS:
                    sink.button(seconds + micros / 1e6, injected)
                else:
                    sink.key(seconds + micros / 1e6, injected)
            elif kind == EV_ABS and (code == ABS_X or code == ABS_Y):
                moved_absolute = True
        reading.dx, reading.dy, reading.moved_absolute, reading.dropping = dx, dy, moved_absolute, dropping
