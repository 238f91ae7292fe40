"""What the input probe asks of a listener; the X11, evdev, pynput listeners and the helper socket each fit it.

A listener feeds an :class:`~farmwatch.agent.probes.input.stats.InputSink` from its own thread
between ``start()`` and ``stop()``; the probe reads the rest through this interface.
"""

from __future__ import annotations

from typing import Protocol

from farmwatch.contract import InputSource


class Listener(Protocol):
    @property
    def source(self) -> InputSource | None:
        """Where the events come from, named in the report's input section (None: not known yet)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the listener stopped on its own (e.g. the X session ended); None while it runs."""
        ...

    def start(self) -> None:
        """Begin listening; raises ``OSError`` (or the library's error) saying why it cannot."""
        ...

    def stop(self) -> None:
        """Stop listening and release what ``start`` opened."""
        ...

    def device_names(self) -> list[str]:
        """Injecting devices only this listener can see (uinput devices the probe reads from sysfs)."""
        ...
