"""Input-timing aggregates of one reporting window, from event timestamps only.

Remote-desktop clients batch input per network packet, so keys arrive in bursts (tiny
intervals) and mouse moves arrive at network rate, in jumps, not at the device's rate (Red Hat
US8972563, US9319422B2; BioCatch). This class reduces events to the contract's aggregates
(``InputTiming``) and keeps nothing else: callers hand it times, an injected flag and, for mouse
moves, the distance moved; it never sees key codes, characters or positions.

Definitions (all per window):
- ``active_seconds``: whole seconds (of the event clock) in which at least one event happened.
- key intervals: time between consecutive key presses, counting only pauses up to
  ``typing_gap`` (a longer pause ends a typing run; it says nothing about rhythm).
- ``key_burst_fraction``: share of key presses that came less than ``burst`` after the
  previous one.
- ``mouse_rate_hz_median``: 1 / the median interval between consecutive moves within a movement
  (moves less than ``moving_gap`` apart); intervals below the clock's ``resolution`` count as
  one resolution step, so simultaneous moves read as the fastest rate the clock can show.
- ``mouse_jump_fraction``: share of moves that travelled more than ``jump`` pixels at once.

Memory stays bounded: key intervals are few (people type < 20 keys/s); mouse intervals go into a
histogram of ``resolution`` steps up to ``moving_gap``.

A per-user input helper (:mod:`.helper_protocol`) hands its part over with :meth:`InputStats.drain`
and the service adds it with :meth:`InputStats.merge`: the same counts, key intervals rounded to
the millisecond and sent as a histogram (their order is not kept), active seconds as a count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from farmwatch.contract import InputSource, InputTiming

from .helper_protocol import InputAggregate


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linear between closest ranks (NumPy's default)."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class InputSink(Protocol):
    """What a listener feeds: the recording methods of :class:`InputStats`."""

    def key(self, at: float, injected: bool = False) -> None: ...

    def button(self, at: float, injected: bool = False) -> None: ...

    def move(self, at: float, distance: float | None, injected: bool = False) -> None: ...


class InputStats:
    """Accumulates one window of input events; :meth:`summary` reads it, :meth:`reset` clears it.

    Parameters are in seconds (``jump`` in pixels); event times must come from one monotonic
    clock, in seconds.
    """

    def __init__(self, burst: float = 0.005, typing_gap: float = 2.0, moving_gap: float = 0.25,
                 jump: float = 200.0, resolution: float = 0.001) -> None:
        self.burst = burst
        self.typing_gap = typing_gap
        self.moving_gap = moving_gap
        self.jump = jump
        self.resolution = resolution
        self.reset()

    def reset(self) -> None:
        """Forget the window's events, to start the next window."""
        self.key_events = 0
        self.mouse_events = 0
        self.injected_events = 0
        self.key_bursts = 0
        self.mouse_moves = 0
        self.mouse_jumps = 0
        self.key_intervals: list[float] = []
        self.move_steps: Counter[int] = Counter()  # interval in resolution steps -> count
        self.active: set[int] = set()
        self.merged_active = 0  # active seconds helpers reported (their clocks are their own: counted, not merged)
        self._drained_active: set[int] = set()  # seconds the last drain counted, so a second is counted once
        # Windows are independent: the first key of a window has no interval, so equal input
        # gives equal sections whatever came before.
        self._last_key: float | None = None
        self._last_move: float | None = None

    def _event(self, at: float, injected: bool) -> None:
        self.active.add(math.floor(at))
        if injected:
            self.injected_events += 1

    def key(self, at: float, injected: bool = False) -> None:
        """A key press at time ``at``."""
        self._event(at, injected)
        self.key_events += 1
        if self._last_key is not None:
            # Listeners reading several devices (evdev) may hand over one device's earlier key
            # after another's later one: the gap between the two presses is what counts.
            interval = abs(at - self._last_key)
            if interval < self.burst:
                self.key_bursts += 1
            if interval <= self.typing_gap:
                self.key_intervals.append(interval)
        self._last_key = at if self._last_key is None else max(at, self._last_key)

    def button(self, at: float, injected: bool = False) -> None:
        """A mouse button press (or wheel step) at time ``at``."""
        self._event(at, injected)
        self.mouse_events += 1

    def move(self, at: float, distance: float | None, injected: bool = False) -> None:
        """A pointer move at ``at`` that travelled ``distance`` pixels (None: unknown)."""
        self._event(at, injected)
        self.mouse_events += 1
        self.mouse_moves += 1
        if distance is not None and distance > self.jump:
            self.mouse_jumps += 1
        if self._last_move is not None and abs(at - self._last_move) < self.moving_gap:
            self.move_steps[max(1, round(abs(at - self._last_move) / self.resolution))] += 1
        self._last_move = at if self._last_move is None else max(at, self._last_move)

    def drain(self) -> InputAggregate:
        """What was recorded since the last drain, which is forgotten; unlike :meth:`reset`, the last
        key and move are kept, so the interval spanning two drains is still measured."""
        key_ms = Counter(round(interval * 1000) for interval in self.key_intervals)
        drained = InputAggregate(
            key_events=self.key_events, mouse_events=self.mouse_events, injected_events=self.injected_events,
            key_bursts=self.key_bursts, mouse_moves=self.mouse_moves, mouse_jumps=self.mouse_jumps,
            active_seconds=len(self.active - self._drained_active),
            key_interval_ms=dict(key_ms), move_interval_steps=dict(self.move_steps),
        )
        last_key, last_move, counted = self._last_key, self._last_move, self.active
        self.reset()
        self._last_key, self._last_move, self._drained_active = last_key, last_move, counted
        return drained

    def merge(self, part: InputAggregate) -> None:
        """Add a helper's drained part to this window (``resolution`` must be the helper's: 1 ms by default)."""
        self.key_events += part.key_events
        self.mouse_events += part.mouse_events
        self.injected_events += part.injected_events
        self.key_bursts += part.key_bursts
        self.mouse_moves += part.mouse_moves
        self.mouse_jumps += part.mouse_jumps
        self.merged_active += part.active_seconds
        for milliseconds, count in part.key_interval_ms.items():
            self.key_intervals.extend([milliseconds / 1000] * count)
        self.move_steps.update(part.move_interval_steps)

    def _median_move_interval(self) -> float | None:
        """Median of the histogram of move intervals, in seconds."""
        total = sum(self.move_steps.values())
        if not total:
            return None
        ordered = sorted(self.move_steps.items())

        def at_rank(rank: int) -> int:
            seen = 0
            for step, count in ordered:
                seen += count
                if rank < seen:
                    return step
            raise AssertionError("rank beyond the histogram")

        return (at_rank((total - 1) // 2) + at_rank(total // 2)) / 2 * self.resolution

    def summary(self, seconds_observed: float, virtual_devices: Sequence[str] = (),
                source: InputSource | None = None) -> InputTiming:
        """The window's aggregates as the contract's ``input`` section; ``source`` names the listener."""
        intervals_ms = sorted(interval * 1000 for interval in self.key_intervals)
        median_interval = self._median_move_interval()

        def q(p: float) -> float | None:
            return round(quantile(intervals_ms, p), 3) if intervals_ms else None

        return InputTiming(
            seconds_observed=round(seconds_observed, 3),
            active_seconds=float(len(self.active) + self.merged_active),
            key_events=self.key_events,
            mouse_events=self.mouse_events,
            injected_events=self.injected_events,
            virtual_devices=sorted(set(virtual_devices)),
            key_interval_ms_p10=q(0.1),
            key_interval_ms_p50=q(0.5),
            key_interval_ms_p90=q(0.9),
            key_burst_fraction=round(self.key_bursts / self.key_events, 4) if self.key_events else None,
            mouse_rate_hz_median=round(1 / median_interval, 3) if median_interval else None,
            mouse_jump_fraction=round(self.mouse_jumps / self.mouse_moves, 4) if self.mouse_moves else None,
            source=source,
        )
