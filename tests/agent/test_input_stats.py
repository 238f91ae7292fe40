"""InputStats, the pure reduction of input events to the contract's timing aggregates."""

from __future__ import annotations

import pytest

from farmwatch.agent.probes.input.stats import InputStats, quantile


def typed(stats: InputStats, times: list[float], injected: bool = False) -> None:
    for at in times:
        stats.key(at, injected)


def test_empty_window_has_counts_and_no_timing() -> None:
    summary = InputStats().summary(300.0)
    assert summary.model_dump() == {
        "seconds_observed": 300.0, "active_seconds": 0.0, "key_events": 0, "mouse_events": 0,
        "injected_events": 0, "virtual_devices": [], "key_interval_ms_p10": None,
        "key_interval_ms_p50": None, "key_interval_ms_p90": None, "key_burst_fraction": None,
        "mouse_rate_hz_median": None, "mouse_jump_fraction": None, "source": None, "helper_uids": None,
    }


def test_key_intervals_quantiles_and_bursts() -> None:
    stats = InputStats()
    # 11 keys 150 ms apart, a 1 s pause, then 5 keys 2 ms apart: a batched remote burst.
    times = [i * 0.150 for i in range(11)] + [2.5 + i * 0.002 for i in range(5)]
    typed(stats, times)
    summary = stats.summary(10.0)
    intervals = sorted([150.0] * 10 + [1000.0] + [2.0] * 4)
    assert summary.key_events == 16
    assert summary.key_burst_fraction == round(4 / 16, 4)
    assert summary.key_interval_ms_p10 == pytest.approx(quantile(intervals, 0.1), abs=1e-3)
    assert summary.key_interval_ms_p50 == pytest.approx(150.0, abs=1e-3)
    assert summary.key_interval_ms_p90 == pytest.approx(quantile(intervals, 0.9), abs=1e-3)
    assert summary.active_seconds == 3.0  # events in seconds 0, 1 and 2

def test_active_seconds_counts_distinct_seconds() -> None:
    stats = InputStats()
    typed(stats, [0.1, 0.9, 1.2, 5.0, 5.5])
    assert stats.summary(10.0).active_seconds == 3.0


def test_long_pauses_are_not_rhythm() -> None:
    stats = InputStats(typing_gap=2.0)
    typed(stats, [0.0, 0.1, 60.0, 60.2])
    summary = stats.summary(61.0)
    # only the 100 ms and 200 ms intervals count (the 59.8 s pause would make p90 huge)
    assert (summary.key_interval_ms_p10, summary.key_interval_ms_p90) == (pytest.approx(110.0), pytest.approx(190.0))


def test_mouse_rate_jumps_and_injection() -> None:
    stats = InputStats()
    for i in range(11):  # a 100 Hz device: moves 10 ms apart, 5 px each
        stats.move(1.0 + i * 0.010, 5.0)
    stats.move(3.0, 450.0, injected=True)  # after a pause: a new movement, one jump
    stats.move(3.050, 300.0, injected=True)
    stats.button(3.1, injected=True)
    summary = stats.summary(5.0)
    assert summary.mouse_events == 14
    assert summary.injected_events == 3
    assert summary.mouse_jump_fraction == round(2 / 13, 4)
    # intervals within movements: ten of 10 ms and one of 50 ms -> median 10 ms -> 100 Hz
    assert summary.mouse_rate_hz_median == pytest.approx(100.0)


def test_simultaneous_moves_read_as_the_clock_limit() -> None:
    stats = InputStats(resolution=0.001)
    for at in (1.0, 1.0, 1.0, 1.0):  # a packet of moves delivered at once
        stats.move(at, 10.0)
    assert stats.summary(2.0).mouse_rate_hz_median == pytest.approx(1000.0)


def test_unknown_distance_counts_the_move_but_not_the_jump_share() -> None:
    stats = InputStats()
    stats.move(0.0, None)
    stats.move(0.01, 500.0)
    assert stats.summary(1.0).mouse_jump_fraction == 0.5


def test_reset_starts_an_independent_window() -> None:
    stats = InputStats()
    typed(stats, [0.0, 0.15])
    stats.reset()
    typed(stats, [0.30, 0.301])
    summary = stats.summary(1.0)
    assert summary.key_events == 2
    assert summary.key_interval_ms_p50 == pytest.approx(1.0)  # nothing measured from before the reset
    assert summary.key_burst_fraction == 0.5


def test_same_rhythm_same_summary_whatever_was_typed() -> None:
    """The API takes no content at all; equal timing gives equal sections."""
    rhythm = [0.0, 0.12, 0.31, 0.45, 0.61]
    first, second = InputStats(), InputStats()
    typed(first, rhythm)
    typed(second, rhythm)
    assert first.summary(1.0) == second.summary(1.0)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([1.0], 0.5, 1.0), ([1.0, 2.0], 0.5, 1.5), ([0.0, 10.0, 20.0, 30.0, 40.0], 0.9, 36.0), ([5.0, 7.0], 0.0, 5.0)],
)
def test_quantile_is_linear_between_ranks(values: list[float], q: float, expected: float) -> None:
    assert quantile(values, q) == pytest.approx(expected)


def test_events_handed_over_out_of_order_give_no_negative_interval() -> None:
    """Two keyboards read one after the other (evdev): an earlier press may arrive after a later one."""
    stats = InputStats()
    typed(stats, [1.000, 1.300, 1.298, 1.600])  # the third press happened 2 ms before the second
    summary = stats.summary(2.0)
    assert stats.key_intervals == pytest.approx([0.300, 0.002, 0.300])  # the last counts from the latest press
    assert summary.key_burst_fraction == 0.25 and (summary.key_interval_ms_p10 or 0) >= 0
