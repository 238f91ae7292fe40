"""What the kernel input listener (evdev) costs while a fast mouse moves, against the same listener
reading every frame as it arrives.

A 1000 Hz gaming mouse moving without pause is the worst case a laptop user produces: 1000 event
frames a second (REL_X, REL_Y, SYN_REPORT each). This box has no input devices (no uinput in its
kernel), so the device is replayed as in the tests (tests/fixtures/evdev_devices.py): a FIFO fed
by a separate feeder process with ``struct input_event`` frames, each written when due, as a device
wakes its reader. The figure is the CPU time of the listener's own thread (its per-thread clock), as
a share of one core: neither the feeder nor anything else in this process is in it. The baseline
is the same listener with batching turned off (``BATCH_SECONDS = 0``: a read per wake-up, as
before issue 13), measured in the same run. Target: at most 1 % of one core.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))
from evdev_devices import MOUSE, Machine  # noqa: E402  (the tests' replay)
from report import Figure, at_most, describe, publish, quick  # noqa: E402

from farmwatch.agent.probes.input import evdev_listener  # noqa: E402
from farmwatch.agent.probes.input.stats import InputStats  # noqa: E402

RATE_HZ = 1000
SECONDS = 3.0 if quick() else 20.0

FEEDER = """
import os, struct, sys, time
event = struct.Struct("@llHHi")
rate, seconds = int(sys.argv[2]), float(sys.argv[3])
fifo = os.open(sys.argv[1], os.O_WRONLY)
frames, started = 0, time.monotonic()
while (elapsed := time.monotonic() - started) < seconds:
    due = int(elapsed * rate)
    while frames < due:  # every frame on its own write, as the kernel hands them over
        at = started + frames / rate
        s, us = int(at), round(at % 1 * 1e6)
        os.write(fifo, event.pack(s, us, 2, 0, 2) + event.pack(s, us, 2, 1, 1) + event.pack(s, us, 0, 0, 0))
        frames += 1
    time.sleep(0.0005)
print(frames)
"""


def listener_cpu(batch_seconds: float) -> tuple[float, int, int, int]:
    """Percent of one core the listener thread used under the replayed mouse; moves seen, frames, reads."""
    evdev_listener.BATCH_SECONDS = batch_seconds
    with tempfile.TemporaryDirectory(prefix="farmwatch-evdev-") as folder:
        machine = Machine(Path(folder))
        machine.plug("event0", MOUSE)
        try:
            stats = InputStats()
            listener = evdev_listener.EvdevInputListener(stats, machine.sys_root, machine.dev_root)
            listener.start()
            assert listener._thread is not None and listener._thread.ident is not None
            clock = time.pthread_getcpuclockid(listener._thread.ident)
            before, began = time.clock_gettime(clock), time.monotonic()
            fed = subprocess.run([sys.executable, "-c", FEEDER, str(machine.dev_root / "input" / "event0"),
                                  str(RATE_HZ), str(SECONDS)], capture_output=True, text=True, check=True)
            time.sleep(0.1)  # the last batch
            spent, elapsed = time.clock_gettime(clock) - before, time.monotonic() - began
            listener.stop()
        finally:
            machine.close()
    return 100 * spent / elapsed, stats.mouse_moves, int(fed.stdout), listener.reads


def main() -> int:
    batch = evdev_listener.BATCH_SECONDS
    batched = listener_cpu(batch)
    try:
        unbatched = listener_cpu(0.0)
    finally:
        evdev_listener.BATCH_SECONDS = batch  # run_all.py runs every script in one process
    publish([Figure(f"evdev listener, {RATE_HZ} Hz mouse", batched[0], "% core", baseline=unbatched[0],
                    baseline_is="a read per wake-up (no batching)", target=at_most(1))])
    for name, (_, moves, frames, reads) in (("batched", batched), ("unbatched", unbatched)):
        print(f"  {name:9s} {moves} moves seen of {frames} frames written, in {reads} reads")
    return 0


if __name__ == "__main__":
    describe(__doc__)
    raise SystemExit(main())
