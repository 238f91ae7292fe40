"""Windows and macOS input listener through pynput (>= 1.8), reduced at once to timing.

pynput 1.8 hands every callback an ``injected`` flag: on Windows the low-level hooks'
``LLKHF_INJECTED``/``LLMHF_INJECTED`` bits, on macOS a non-zero ``kCGEventSourceUnixProcessID``.
The key object and the pointer coordinates are dropped inside the callbacks; only times, the
flag and the distance of one move reach the sink.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal

from .stats import InputSink


class PynputInputListener:
    """Keyboard and mouse hooks in pynput's own threads, feeding a sink with times only."""

    source: ClassVar[Literal["pynput"]] = "pynput"  # named in the report's input section

    def __init__(self, sink: InputSink) -> None:
        self.sink = sink
        self._pointer: tuple[float, float] | None = None
        self._listeners: list[Any] = []
        self.failure: str | None = None  # pynput's hooks do not end on their own

    def start(self) -> None:
        """Install the hooks; raises ImportError when pynput is missing."""
        from pynput import keyboard, mouse  # imported here: it loads the OS's hook library

        self._listeners = [
            keyboard.Listener(on_press=self._press),
            mouse.Listener(on_move=self._move, on_click=self._click, on_scroll=self._scroll),
        ]
        for listener in self._listeners:
            listener.start()
            listener.wait()

    def stop(self) -> None:
        for listener in self._listeners:
            listener.stop()
        self._listeners = []

    def device_names(self) -> list[str]:
        """None: pynput marks injected events but does not name the devices behind them."""
        return []

    def _press(self, _key: object, injected: bool = False) -> None:
        self.sink.key(time.monotonic(), injected)

    def _click(self, _x: float, _y: float, _button: object, pressed: bool, injected: bool = False) -> None:
        if pressed:
            self.sink.button(time.monotonic(), injected)

    def _scroll(self, _x: float, _y: float, _dx: float, _dy: float, injected: bool = False) -> None:
        self.sink.button(time.monotonic(), injected)

    def _move(self, x: float, y: float, injected: bool = False) -> None:
        before, self._pointer = self._pointer, (x, y)
        distance = None if before is None else math.hypot(x - before[0], y - before[1])
        self.sink.move(time.monotonic(), distance, injected)
