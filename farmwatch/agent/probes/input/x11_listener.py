"""X11 input listener: XInput2 raw events on the root window, reduced at once to timing.

Raw events (XI 2.1+) reach a root-window listener whatever window has focus and whatever grabs
are active, and name the physical (slave) device that produced them (``sourceid``). X11 does not
mark synthetic input as such, but XTest input always comes from the "Virtual core XTEST
keyboard/pointer" slaves and xrdp's from its ``xrdpKeyboard``/``xrdpMouse`` devices; devices
created through uinput are counted as injected when their name matches one under
``/sys/devices/virtual/input``.

Privacy: a key event's keycode is never read (only its time and source); a pointer position
is read only to compute the distance of one move, then dropped. Pointer warps
(``XWarpPointer``, e.g. ``xdotool mousemove``) are not input and produce no raw events.

Limit: XTest moves carry either a delta or a position (the raw event does not say which), and
absolute devices carry positions, so their distance is taken from the pointer's position when
the event is handled; a listener starved of CPU while a tool moves several times merges moves.

Protocol references: X Input Extension 2.2 protocol (``XIproto2.txt``), "RawEvent" layout.
"""

from __future__ import annotations

import math
import select
import struct
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from Xlib import display as xdisplay
from Xlib.error import ConnectionClosedError, XError
from Xlib.ext import xinput

from .stats import InputSink
from .x11_session import connect

RAW_KEY_PRESS = xinput.RawKeyPress
RAW_BUTTON_PRESS = xinput.RawButtonPress
RAW_MOTION = xinput.RawMotion
KEY_REPEAT_FLAG = 1 << 16  # XIKeyRepeat: an auto-repeated key, not a keystroke
_RAW_HEADER = struct.Struct("=HIIHHI4x")  # deviceid, time, detail, sourceid, valuators_len, flags, pad
_FP3232 = struct.Struct("=iI")


@dataclass(frozen=True)
class RawEvent:
    """The parts of an XI2 raw event the listener uses (no keycode: ``detail`` is dropped)."""

    evtype: int
    sourceid: int
    time_ms: int
    flags: int
    valuators: dict[int, float] = field(default_factory=dict)  # axis number -> accelerated value


def parse_raw_event(evtype: int, data: bytes) -> RawEvent:
    """Decode a raw event's body (the bytes after the 10-byte generic-event header)."""
    _device, time_ms, _detail, sourceid, mask_len, flags = _RAW_HEADER.unpack_from(data)
    offset = _RAW_HEADER.size
    mask = struct.unpack_from(f"={mask_len}I", data, offset)
    offset += 4 * mask_len
    axes = [word * 32 + bit for word, bits in enumerate(mask) for bit in range(32) if bits >> bit & 1]
    valuators = {}
    for axis in axes:
        integral, fraction = _FP3232.unpack_from(data, offset)
        valuators[axis] = integral + fraction / 2**32
        offset += _FP3232.size
    return RawEvent(evtype=evtype, sourceid=sourceid, time_ms=time_ms, flags=flags, valuators=valuators)


def is_injecting_device(name: str, uinput_names: Collection[str] = ()) -> bool:
    """Whether input from the X device ``name`` is synthetic (XTest, xrdp, a uinput device)."""
    return name.startswith("Virtual core XTEST") or name.lower().startswith("xrdp") or name in uinput_names


@dataclass
class _Device:
    name: str
    injected: bool
    relative: bool  # both pointer axes report deltas (mice, touchpads), not positions


class X11InputListener:
    """Listens on one X display in a background thread and feeds a sink with times only."""

    source: ClassVar[Literal["x11"]] = "x11"  # named in the report's input section

    def __init__(self, display_name: str, sink: InputSink,
                 uinput_names: Callable[[], Collection[str]] = frozenset, xauthority: str | None = None) -> None:
        self.display_name = display_name
        self.xauthority = xauthority  # the session's cookie file; None: XAUTHORITY or ~/.Xauthority
        self.sink = sink
        self.uinput_names = uinput_names  # read again whenever X reports new devices
        self.devices: dict[int, _Device] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: xdisplay.Display | None = None
        self._clock_ms = 0  # server time, unwrapped (X time is a 32-bit millisecond counter)
        self._last_server_ms: int | None = None
        self._pointer: tuple[int, int] | None = None
        self.failure: str | None = None  # why the listener thread ended early, if it did

    def start(self) -> None:
        """Connect and subscribe; raises ``Xlib.error`` / ``OSError`` if the display is unusable."""
        connection = connect(self.display_name, self.xauthority)
        try:
            if not connection.has_extension(xinput.extname):
                raise OSError(f"X display {self.display_name} has no XInputExtension")
            version = xinput.XIQueryVersion(
                display=connection.display, opcode=connection.display.get_extension_major(xinput.extname),
                major_version=2, minor_version=2,
            )
            if (version.major_version, version.minor_version) < (2, 1):
                raise OSError(f"X display {self.display_name} has XInput {version.major_version}."
                              f"{version.minor_version}; raw event sources need 2.1")
            root = connection.screen().root
            masks = xinput.RawKeyPressMask | xinput.RawButtonPressMask | xinput.RawMotionMask
            root.xinput_select_events([(xinput.AllMasterDevices, masks), (xinput.AllDevices, xinput.HierarchyChangedMask)])
            self._connection = connection
            self._load_devices()
            pointer = root.query_pointer()
            self._pointer = (pointer.root_x, pointer.root_y)
        except BaseException:
            connection.close()
            raise
        self._thread = threading.Thread(target=self._run, name="farmwatch-x11-input", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._connection is not None:
            try:
                self._connection.close()
            except (ConnectionClosedError, OSError):
                pass  # the server is already gone; nothing to release
            self._connection = None

    def device_names(self) -> list[str]:
        """Names of the injecting X devices present, except the XTest slaves every server has."""
        return sorted(d.name for d in self.devices.values() if d.injected and not d.name.startswith("Virtual core XTEST"))

    def _load_devices(self) -> None:
        assert self._connection is not None
        uinput = frozenset(self.uinput_names())
        devices = {}
        for info in self._connection.xinput_query_device(xinput.AllDevices).devices:
            name = info.name.decode(errors="replace") if isinstance(info.name, bytes) else info.name
            modes = {c.number: c.mode for c in info.classes if c.type == xinput.ValuatorClass and c.number in (0, 1)}
            relative = len(modes) == 2 and all(mode == xinput.ModeRelative for mode in modes.values())
            devices[info.deviceid] = _Device(name, is_injecting_device(name, uinput), relative)
        self.devices = devices

    def _run(self) -> None:
        connection = self._connection
        assert connection is not None
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([connection.fileno()], [], [], 0.2)
                if not readable and not connection.pending_events():
                    continue
                while connection.pending_events():
                    self._handle(connection.next_event())
        except (ConnectionClosedError, XError, OSError) as error:  # the session ended, the server died
            self.failure = f"lost X display {self.display_name}: {error or type(error).__name__}"

    def _handle(self, event: object) -> None:
        evtype = getattr(event, "evtype", None)
        data = getattr(event, "_data", {}).get("data")
        if evtype == xinput.HierarchyChanged:
            self._load_devices()
            return
        if evtype not in (RAW_KEY_PRESS, RAW_BUTTON_PRESS, RAW_MOTION) or not isinstance(data, bytes):
            return
        raw = parse_raw_event(evtype, data)
        device = self.devices.get(raw.sourceid) or _Device(f"device {raw.sourceid}", False, False)
        at = self._seconds(raw.time_ms)
        if evtype == RAW_KEY_PRESS:
            if not raw.flags & KEY_REPEAT_FLAG:
                self.sink.key(at, device.injected)
        elif evtype == RAW_BUTTON_PRESS:
            self.sink.button(at, device.injected)
        else:
            self.sink.move(at, self._distance(device, raw), device.injected)

    def _seconds(self, server_ms: int) -> float:
        if self._last_server_ms is not None:
            self._clock_ms += (server_ms - self._last_server_ms) & 0xFFFFFFFF
        self._last_server_ms = server_ms
        return self._clock_ms / 1000

    def _distance(self, device: _Device, raw: RawEvent) -> float | None:
        """Pixels moved by one motion event; the position is used here and then forgotten.

        A relative device's valuators are the move itself. XTest and absolute devices carry
        positions (or deltas, indistinguishably, for XTest), so the pointer is asked where it
        now is and the distance taken from where it was.
        """
        if device.relative and not device.injected:
            dx, dy = raw.valuators.get(0, 0.0), raw.valuators.get(1, 0.0)
            if self._pointer is not None:
                self._pointer = (self._pointer[0] + round(dx), self._pointer[1] + round(dy))
            return math.hypot(dx, dy)
        assert self._connection is not None
        reply = self._connection.screen().root.query_pointer()
        now = (reply.root_x, reply.root_y)
        before, self._pointer = self._pointer, now
        return None if before is None else math.hypot(now[0] - before[0], now[1] - before[1])
