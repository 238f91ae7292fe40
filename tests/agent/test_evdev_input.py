"""The kernel input listener (evdev): device discovery, timing aggregates, injected devices, privacy.

Devices are replayed (see tests/fixtures/evdev_devices.py for why and how).
"""

from __future__ import annotations

import math
import random
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from evdev_devices import (
    ABS_X, ABS_Y, BTN_LEFT, BTN_TOUCH, EV_ABS, EV_KEY, EV_REL, EV_SYN, KEY_A, KEY_D, KEY_F, KEY_S, KEYBOARD, LID,
    MOUSE, POWER, REL_WHEEL, REL_X, REL_Y, TOUCHPAD, UINPUT, Machine, keys, settle,
)

from farmwatch.agent.probes.input.evdev_listener import (
    EvdevInputListener, capability_bits, input_devices, queue_events,
)
from farmwatch.agent.probes.input.stats import InputStats
from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.input.probe import InputTimingProbe

pytestmark = pytest.mark.skipif(sys.platform != "linux" or struct.calcsize("@l") != 8,
                                reason="evdev is Linux's; the replayed input_event layout is the 64-bit one")


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    built = Machine(tmp_path)
    yield built
    built.close()


def rel_move(at: float, dx: int, dy: int = 0) -> list[tuple[float, int, int, int]]:
    return [(at, EV_REL, REL_X, dx), (at, EV_REL, REL_Y, dy), (at, EV_SYN, 0, 0)]


def evdev_probe(machine: Machine, source: str = "evdev") -> InputTimingProbe:
    # An empty proc folder: no desktop session to find, whatever runs on the developer's machine.
    probe = InputTimingProbe(ProbeContext(platform="linux", sys_root=machine.sys_root, dev_root=machine.dev_root,
                                          proc_root=machine.proc_root, options={"input": {"source": source}}))
    probe.start()
    return probe


def test_capability_bitmaps_are_read_most_significant_word_first() -> None:
    assert capability_bits("1f0000 0 0 0 0") == set(range(0x110, 0x115))
    assert capability_bits("903") == {0, 1, 8, 11}
    assert KEY_A in capability_bits(KEYBOARD[2]["key"])


def test_each_device_waits_for_as_many_events_as_the_kernel_queues_for_it_at_least(machine: Machine) -> None:
    """evdev_compute_buffer_size: 8 frames of (SYN_REPORT + one per axis + 7 for keys and MSC), at least
    64, rounded up to a power of two; multi-touch axes count per slot, here as none (a lower bound)."""
    assert queue_events({"ev": {EV_KEY}, "key": {KEY_A}, "rel": set(), "abs": set()}) == 64  # 8 x 8
    mouse = {"ev": {EV_KEY, EV_REL}, "key": {BTN_LEFT}, "rel": {REL_X, REL_Y, REL_WHEEL, 11}, "abs": set()}
    assert queue_events(mouse) == 128  # 8 x 12 = 96
    assert queue_events({**mouse, "ev": {EV_KEY}}) == 64  # relative axes the device does not send count not
    pen = {"ev": {EV_KEY, EV_ABS}, "key": {BTN_TOUCH}, "rel": set(), "abs": set(range(0x00, 0x1C))}
    assert queue_events(pen) == 512  # 8 x (1 + 28 + 7) = 288
    touchpad = {**pen, "abs": {ABS_X, ABS_Y, 0x18, 0x2F, 0x35, 0x36, 0x39}}  # MT slot, position x/y, tracking id
    assert queue_events(touchpad) == 128  # 8 x (1 + 3 + 7) = 88
    for number, device in enumerate((KEYBOARD, MOUSE, TOUCHPAD)):
        machine.plug(f"event{number}", device)
    found = {device.node: device.queue_events for device in input_devices(machine.sys_root)}
    assert found == {"event0": 64, "event1": 128, "event2": 128}


def test_keyboards_and_pointers_are_found_switches_and_buttons_are_not(machine: Machine) -> None:
    for number, device in enumerate((KEYBOARD, MOUSE, TOUCHPAD, LID, POWER, UINPUT)):
        machine.plug(f"event{number}", device, with_node=False)
    found = input_devices(machine.sys_root)
    assert [(d.node, d.name, d.injected) for d in found] == [
        ("event0", "AT Translated Set 2 keyboard", False),
        ("event1", "Logitech USB Optical Mouse", False),
        ("event2", "SynPS/2 Synaptics TouchPad", False),
        ("event5", "remote-control virtual keyboard", True),
    ]


def test_a_window_of_keyboard_mouse_touchpad_and_uinput_input(machine: Machine) -> None:
    for number, device in enumerate((KEYBOARD, MOUSE, TOUCHPAD, LID, UINPUT)):
        machine.plug(f"event{number}", device, with_node=device is not LID)
    probe = evdev_probe(machine)
    try:
        t0 = 5000.0
        # 11 keys 150 ms apart, 1 s later a burst of 5 keys 2 ms apart (a batched remote burst)
        typed = [t0 + i * 0.150 for i in range(11)] + [t0 + 2.5 + i * 0.002 for i in range(5)]
        machine.write("event0", keys(typed, [KEY_A] * len(typed)))
        settle(probe.events_seen, 16)
        # 10 small moves and one 269 px jump 8 ms apart, a wheel step and a click
        moves = [t0 + 10 + i * 0.008 for i in range(11)]
        mouse = [e for at in moves[:10] for e in rel_move(at, 3)] + rel_move(moves[10], 250, -100)
        mouse += [(t0 + 11, EV_REL, REL_WHEEL, -1), (t0 + 11, EV_SYN, 0, 0),
                  (t0 + 12, EV_KEY, BTN_LEFT, 1), (t0 + 12, EV_SYN, 0, 0), (t0 + 12.1, EV_KEY, BTN_LEFT, 0)]
        machine.write("event1", mouse)
        settle(probe.events_seen, 16 + 13)
        # a finger lands (not a click), slides for three frames, then a tap-click
        touch = [(t0 + 20, EV_KEY, BTN_TOUCH, 1), (t0 + 20, EV_SYN, 0, 0)]
        for step in range(3):
            at = t0 + 20.1 + step * 0.008
            touch += [(at, EV_ABS, ABS_X, 1000 + 40 * step), (at, EV_ABS, ABS_Y, 2000), (at, EV_SYN, 0, 0)]
        touch += [(t0 + 21, EV_KEY, BTN_LEFT, 1), (t0 + 21, EV_SYN, 0, 0)]
        machine.write("event2", touch)
        settle(probe.events_seen, 16 + 13 + 4)
        # a uinput keyboard types three keys 100 ms apart, a minute later
        machine.write("event4", keys([t0 + 60 + i * 0.1 for i in range(3)], [KEY_S] * 3))
        settle(probe.events_seen, 16 + 13 + 4 + 3)
        section = probe.collect()
    finally:
        probe.stop()
    assert (section.key_events, section.mouse_events, section.injected_events) == (19, 17, 3)
    assert section.virtual_devices == ["remote-control virtual keyboard"]
    assert section.source == "evdev"
    # intervals: 4 x 2 ms, 2 x 100 ms (uinput), 10 x 150 ms, 1 x 1000 ms; the 57.5 s pause is no interval
    assert (section.key_interval_ms_p10, section.key_interval_ms_p50, section.key_interval_ms_p90) == (2.0, 150.0, 150.0)
    assert section.key_burst_fraction == round(4 / 19, 4)
    assert section.mouse_rate_hz_median == 125.0  # moves 8 ms apart on the mouse and on the touchpad
    assert section.mouse_jump_fraction == round(1 / 14, 4)  # touchpad moves have no pixel distance
    counted = typed + [t0 + 60 + i * 0.1 for i in range(3)] + moves + [t0 + 11, t0 + 12, t0 + 21]
    counted += [t0 + 20.1 + step * 0.008 for step in range(3)]
    assert section.active_seconds == len({math.floor(at) for at in counted})


def test_different_keys_in_the_same_rhythm_give_the_same_section(machine: Machine) -> None:
    """Content does not leak: 'asdf' and 'fdsa' typed alike give identical sections."""
    machine.plug("event0", KEYBOARD)
    sections = []
    for window, codes in enumerate(([KEY_A, KEY_S, KEY_D, KEY_F], [KEY_F, KEY_D, KEY_S, KEY_A])):
        probe = evdev_probe(machine)
        try:
            start = 100.0 * (window + 1)
            machine.write("event0", keys([start, start + 0.2, start + 0.203, start + 0.5], codes))
            settle(probe.events_seen, 4)
            sections.append(probe.collect().model_dump(exclude={"seconds_observed"}))
        finally:
            probe.stop()
    assert sections[0] == sections[1]
    assert sections[0]["key_events"] == 4 and sections[0]["key_burst_fraction"] == 0.25


def test_events_the_kernel_dropped_are_skipped_to_the_next_frame(machine: Machine) -> None:
    machine.plug("event0", MOUSE)
    stats = InputStats()
    listener = EvdevInputListener(stats, machine.sys_root, machine.dev_root)
    listener.start()
    try:
        machine.write("event0", [(1.0, EV_SYN, 3, 0), (1.0, EV_REL, REL_X, 900), (1.0, EV_SYN, 0, 0)]
                      + rel_move(2.0, 5))
        settle(lambda: stats.key_events + stats.mouse_events, 1)
        time.sleep(0.1)
    finally:
        listener.stop()
    assert (stats.mouse_moves, stats.mouse_jumps) == (1, 0)  # the 900 px frame was cut short


def test_a_keyboard_plugged_in_later_is_picked_up(machine: Machine) -> None:
    machine.plug("event0", MOUSE)
    stats = InputStats()
    listener = EvdevInputListener(stats, machine.sys_root, machine.dev_root, rescan_seconds=0.05)
    listener.start()
    try:
        machine.plug("event1", KEYBOARD)
        deadline = time.monotonic() + 20
        while "event1" not in {r.device.node for r in listener._reading.values()}:
            assert time.monotonic() < deadline, "the new keyboard was never opened"
            time.sleep(0.02)
        machine.write("event1", keys([7.0], [KEY_A]))
        settle(lambda: stats.key_events + stats.mouse_events, 1)
    finally:
        listener.stop()
    assert stats.key_events == 1


def test_without_devices_or_access_the_probe_says_why(machine: Machine) -> None:
    probe = evdev_probe(machine)
    with pytest.raises(ProbeUnavailable, match=r"cannot read kernel input devices: no keyboard or pointer under .*class/input"):
        probe.collect()
    probe.stop()
    machine.plug("event0", KEYBOARD, with_node=False)  # listed in sysfs, but no node we may open
    probe = evdev_probe(machine)
    with pytest.raises(ProbeUnavailable, match=r"cannot read any input device: .*event0: No such file or directory "
                                               r"\(the agent needs root or the input group\)"):
        probe.collect()
    probe.stop()


def test_without_a_display_auto_falls_back_to_evdev(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    machine.plug("event0", KEYBOARD)
    probe = evdev_probe(machine, source="auto")
    try:
        machine.write("event0", keys([1.0, 1.2], [KEY_A, KEY_S]))
        settle(probe.events_seen, 2)
        section = probe.collect()
    finally:
        probe.stop()
    assert (section.source, section.key_events) == ("evdev", 2)


def test_an_unknown_source_is_named(machine: Machine) -> None:
    probe = evdev_probe(machine, source="wayland")
    with pytest.raises(ProbeUnavailable, match="probe_options.input.source is 'wayland': .*'auto', 'x11' or 'evdev'"):
        probe.collect()
    probe.stop()


def test_batched_reads_give_the_aggregates_of_reducing_every_frame_as_it_comes(machine: Machine) -> None:
    """Issue 13: the listener reads a queue of frames per wake-up instead of one frame. A generated
    (seeded) 2 s of a 1000 Hz mouse with jumps and typing with bursts, written frame by frame in real
    time, gives the very section that handing each frame to InputStats on its own gives, with the
    mouse read about every 20 ms (its queue holds 128 events) and no event lost."""
    machine.plug("event0", KEYBOARD)
    machine.plug("event1", MOUSE)
    rng = random.Random(13)
    t0, frames = 7000.0, 2000
    mouse = [(t0 + i / 1000, rng.choice([1, 2, 3, -2]) if rng.random() > 0.01 else 400, rng.randint(-3, 3))
             for i in range(frames)]
    typed, at = [], t0
    while at < t0 + 2:
        at += rng.choice([0.002, 0.09, 0.15, 0.3])
        typed.append(at)
    expected = InputStats()
    for when, dx, dy in mouse:
        expected.move(when, math.hypot(dx, dy))
    for when in typed:
        expected.key(when)
    stats = InputStats()
    listener = EvdevInputListener(stats, machine.sys_root, machine.dev_root)
    listener.start()
    try:
        keyboard = iter(sorted(keys(typed, [KEY_A] * len(typed))))
        pending = next(keyboard, None)
        began = time.monotonic()
        for number, (when, dx, dy) in enumerate(mouse):
            while time.monotonic() - began < number / 1000:
                time.sleep(0.0002)
            machine.write("event1", rel_move(when, dx, dy))  # one frame a write, as the kernel hands them over
            while pending is not None and pending[0] <= when:
                machine.write("event0", [pending])
                pending = next(keyboard, None)
        machine.write("event0", list(([pending] if pending else []) + list(keyboard)))
        settle(lambda: stats.key_events + stats.mouse_events, frames + len(typed))
    finally:
        listener.stop()
    assert stats.summary(2.0) == expected.summary(2.0)
    assert stats.mouse_jumps > 0 and stats.key_bursts > 0  # the sequence exercises both
    # The mouse's 128-event queue lets it wait 20 ms (about 100 reads, a few more where the keyboard's
    # 64 shortens a wait); a wait of 10 ms for every device read it about 200 times.
    assert listener.reads <= frames // 12, f"{listener.reads} reads for {frames} frames: not batched by queue length"


def test_after_a_queue_overflowed_every_frame_is_read_as_it_comes(machine: Machine) -> None:
    """A mouse faster than the batch wait allows (4000-8000 Hz) overflows its evdev queue: the kernel
    sends SYN_DROPPED, and from then on the listener reads without waiting, losing no more frames."""
    machine.plug("event0", MOUSE)
    stats = InputStats()
    listener = EvdevInputListener(stats, machine.sys_root, machine.dev_root)
    listener.start()
    frames = 1000
    try:
        machine.write("event0", [(6999.0, EV_SYN, 3, 0), (6999.0, EV_SYN, 0, 0)])  # the kernel's overflow notice
        began = time.monotonic()
        for number in range(frames):
            while time.monotonic() - began < number / 1000:
                time.sleep(0.0002)
            machine.write("event0", rel_move(7000 + number / 1000, 2))
        settle(lambda: stats.mouse_events, frames)
    finally:
        listener.stop()
    assert stats.mouse_moves == frames
    assert listener.reads > frames // 5, f"{listener.reads} reads for {frames} frames: still batching"
