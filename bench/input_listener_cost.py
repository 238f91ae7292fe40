"""What the kernel input listener (evdev) costs while a fast mouse moves, against an idle listener.

A 1000 Hz gaming mouse moving without pause is the worst case a laptop user produces: 1000 event
frames a second (REL_X, REL_Y, SYN_REPORT each). This box has no input devices (no uinput in its
kernel), so the device is replayed as in the tests (tests/fixtures/evdev_devices.py): a FIFO fed
with ``struct input_event`` records in real time. The listener's work per event is the real one.
CPU is this process's (listener thread plus the feeder, whose own cost is measured alone first and
subtracted), as a share of one core.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from evdev_devices import EV_REL, EV_SYN, EVENT, MOUSE, REL_X, REL_Y, Machine  # noqa: E402  (the tests' replay)

from farmwatch.agent.probes.input.evdev_listener import EvdevInputListener  # noqa: E402
from farmwatch.agent.probes.input.stats import InputStats  # noqa: E402

RATE_HZ = 1000
SECONDS = 10.0


def feed(write: Callable[[bytes], object], seconds: float) -> int:
    """Write mouse frames at RATE_HZ in real time, each as soon as it is due; returns frames written."""
    frames, started = 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * RATE_HZ)
        if due > frames:
            write(b"".join(frame(started + n / RATE_HZ) for n in range(frames, due)))
            frames = due
        time.sleep(0.001)  # a frame at a time, as a real device wakes its reader
    return frames


def frame(at: float) -> bytes:
    seconds, micros = int(at), round(at % 1 * 1e6)
    return (EVENT.pack(seconds, micros, EV_REL, REL_X, 2) + EVENT.pack(seconds, micros, EV_REL, REL_Y, 1)
            + EVENT.pack(seconds, micros, EV_SYN, 0, 0))


def cpu_share(work: threading.Thread) -> float:
    before, began = os.times(), time.monotonic()
    work.start()
    work.join()
    after, elapsed = os.times(), time.monotonic() - began
    return 100 * (after.user + after.system - before.user - before.system) / elapsed


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="farmwatch-evdev-") as folder:
        machine = Machine(Path(folder))
        machine.plug("event0", MOUSE)
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            alone = cpu_share(threading.Thread(target=feed, args=(lambda data: os.write(null, data), SECONDS)))
            stats = InputStats()
            listener = EvdevInputListener(stats, machine.sys_root, machine.dev_root)
            listener.start()
            idle = cpu_share(threading.Thread(target=time.sleep, args=(SECONDS,)))
            fifo = machine.writers["event0"]
            moving = cpu_share(threading.Thread(target=feed, args=(lambda data: os.write(fifo, data), SECONDS)))
            time.sleep(0.5)
            listener.stop()
        finally:
            os.close(null)
            machine.close()
    print(f"evdev listener, a {RATE_HZ} Hz mouse moving for {SECONDS:g} s (replayed):")
    print(f"  idle        {idle:6.2f} % of one core")
    print(f"  moving      {max(moving - alone, 0):6.2f} % of one core   (feeder alone {alone:.2f} %, subtracted)")
    print(f"  moves seen  {stats.mouse_moves} of {int(RATE_HZ * SECONDS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
