"""The Windows/macOS input path (pynput) on this Linux box, with pynput itself replaced.

pynput's hooks need Windows low-level hooks or macOS event taps, which a Linux box does not have,
so ``FakePynput`` below (written by hand, not recorded) stands in for the library: it has pynput
1.8's ``keyboard.Listener``/``mouse.Listener`` constructor keywords and ``start``/``wait``/``stop``,
and lets a test call the callbacks the way pynput 1.8 does, with its ``injected`` flag
(https://pynput.readthedocs.io/en/latest/keyboard.html#monitoring-the-keyboard; 1.8 changelog).
Everything farmwatch does with those callbacks is real: the listener, the probe and the stats.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.input.probe import InputTimingProbe
from farmwatch.agent.probes.input.pynput_listener import PynputInputListener


@dataclass
class RecordingSink:
    """A fake sink: keeps exactly what the listener hands over, to show nothing else reaches it."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def key(self, at: float, injected: bool = False) -> None:
        self.calls.append(("key", injected))

    def button(self, at: float, injected: bool = False) -> None:
        self.calls.append(("button", injected))

    def move(self, at: float, distance: float | None, injected: bool = False) -> None:
        self.calls.append(("move", distance, injected))


class _FakeListener:
    def __init__(self, **callbacks: Any) -> None:
        self.callbacks = callbacks
        self.running = False

    def start(self) -> None:
        self.running = True

    def wait(self) -> None:
        assert self.running

    def stop(self) -> None:
        self.running = False


class FakePynput:
    """``pynput`` with its two listener classes; ``listeners`` holds every one the code made."""

    def __init__(self) -> None:
        self.listeners: list[_FakeListener] = []
        self.module = types.ModuleType("pynput")
        for name in ("keyboard", "mouse"):
            sub = types.ModuleType(f"pynput.{name}")
            sub.Listener = self._make  # type: ignore[attr-defined]
            setattr(self.module, name, sub)

    def _make(self, **callbacks: Any) -> _FakeListener:
        listener = _FakeListener(**callbacks)
        self.listeners.append(listener)
        return listener

    def fire(self, callback: str, *args: Any) -> None:
        [listener] = [one for one in self.listeners if callback in one.callbacks and one.running]
        listener.callbacks[callback](*args)


@pytest.fixture
def pynput(monkeypatch: pytest.MonkeyPatch) -> FakePynput:
    fake = FakePynput()
    monkeypatch.setitem(sys.modules, "pynput", fake.module)
    monkeypatch.setitem(sys.modules, "pynput.keyboard", fake.module.keyboard)
    monkeypatch.setitem(sys.modules, "pynput.mouse", fake.module.mouse)
    return fake


def test_callbacks_reach_the_sink_as_times_flags_and_distances_only(pynput: FakePynput) -> None:
    sink = RecordingSink()
    listener = PynputInputListener(sink)
    listener.start()
    pynput.fire("on_press", "secret-key-object", True)
    pynput.fire("on_press", "another-key", False)
    pynput.fire("on_move", 100.0, 100.0, False)
    pynput.fire("on_move", 103.0, 104.0, True)
    pynput.fire("on_click", 103.0, 104.0, "Button.left", True, False)
    pynput.fire("on_click", 103.0, 104.0, "Button.left", False, False)  # the release is not counted
    pynput.fire("on_scroll", 103.0, 104.0, 0, -1, True)
    assert sink.calls == [
        ("key", True), ("key", False),
        ("move", None, False),  # the first move has nothing to measure from
        ("move", 5.0, True),
        ("button", False), ("button", True),
    ]
    assert listener.failure is None and listener.device_names() == []
    listener.stop()
    assert not any(one.running for one in pynput.listeners)


def test_pynput_before_1_8_without_the_flag_counts_events_as_not_injected(pynput: FakePynput) -> None:
    sink = RecordingSink()
    PynputInputListener(sink).start()
    pynput.fire("on_press", "k")
    pynput.fire("on_move", 1.0, 1.0)
    assert sink.calls == [("key", False), ("move", None, False)]


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_the_probe_reports_the_pynput_window(pynput: FakePynput, platform: str, tmp_path: Path) -> None:
    probe = InputTimingProbe(ProbeContext(platform=platform, sys_root=tmp_path))
    probe.start()
    try:
        for _ in range(3):
            pynput.fire("on_press", "k", True)
        pynput.fire("on_move", 0.0, 0.0, False)
        pynput.fire("on_move", 300.0, 400.0, False)
        summary = probe.collect()
    finally:
        probe.stop()
    assert summary.source == "pynput"
    assert (summary.key_events, summary.mouse_events, summary.injected_events) == (3, 2, 3)
    assert summary.mouse_jump_fraction == 0.5  # one of two moves went 500 px at once


def test_without_pynput_the_probe_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynput", None)  # an import of it fails, as on a box without it
    probe = InputTimingProbe(ProbeContext(platform="win32", sys_root=tmp_path))
    probe.start()
    with pytest.raises(ProbeUnavailable, match="pynput is not installed"):
        probe.collect()
    probe.stop()
