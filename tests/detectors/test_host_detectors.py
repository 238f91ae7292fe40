"""host_mismatch, working_hours, always_on, agent_health on hand-made records: pinned scores and evidence."""

from __future__ import annotations

import pytest
from detector_records import NOW, START, host, make_record, roster_entry, run, user_input

from farmwatch.detectors.base import device_runs
from farmwatch.detectors.frame import flatten
from farmwatch.detectors.signals.agent_health import AgentHealthDetector
from farmwatch.detectors.signals.always_on import AlwaysOnDetector
from farmwatch.detectors.signals.host_mismatch import HostMismatchDetector
from farmwatch.detectors.signals.working_hours import WorkingHoursDetector


@pytest.mark.parametrize(
    ("section", "expected", "evidence"),
    [
        pytest.param(host("Asia/Seoul", 540), 0.3, {"utc_offset_minutes": 540, "roster_offset_minutes": -360},
                     id="operator-zone"),
        pytest.param(host("America/New_York", -300), 0.1, {"utc_offset_minutes": -300}, id="travel-zone"),
        pytest.param(host(imes=("Microsoft IME (Korean)",)), 0.2, {"languages": ["korean"]}, id="korean-ime"),
        pytest.param(host("Asia/Seoul", 540, layouts=("00000409", "00000419")), 1 - 0.7 * 0.8,
                     {"languages": ["russian"]}, id="zone-and-russian-layout"),
    ],
)
def test_host_mismatch(section, expected, evidence) -> None:
    records = [make_record("d1", 5 * k, host=section) for k in range(4)]
    finding = run(HostMismatchDetector, records, [roster_entry("d1")])["d1"]
    assert finding.score == pytest.approx(expected)
    assert evidence.items() <= finding.evidence.items()


def test_host_mismatch_matching_host_is_quiet() -> None:
    records = [make_record("d1", 5 * k, host=host()) for k in range(4)]
    assert run(HostMismatchDetector, records, [roster_entry("d1")]) == {}


def _active_hours(device: str, utc_hours: range, days: int = 3) -> list[dict]:
    """Active windows at each listed UTC hour on ``days`` days (START is 15:00 UTC)."""
    records = []
    for day in range(days):
        for hour in utc_hours:
            minutes = day * 1440 + ((hour - 15) % 24) * 60 + 30
            records.append(make_record(device, minutes, input=user_input()))
    return records


def test_working_hours_fits_the_operator_zone() -> None:
    finding = run(WorkingHoursDetector, _active_hours("d1", range(0, 9)), [roster_entry("d1")])["d1"]
    assert finding.evidence["best_utc_offset"] == 9  # 09-18 in UTC+9 is 00-09 UTC
    assert finding.evidence["best_fit"] == 1.0 and finding.evidence["roster_fit"] == 0.0
    assert finding.score == pytest.approx(0.4)
    assert "UTC+9" in finding.summary


def test_working_hours_ordinary_day_is_quiet() -> None:
    # 09-18 in Chicago (UTC-6) is 15-24 UTC.
    assert run(WorkingHoursDetector, _active_hours("d1", range(15, 24)), [roster_entry("d1")]) == {}


def test_always_on_with_night_input() -> None:
    records = [make_record("d1", 5 * k, input=user_input()) for k in range(int(2.5 * 288))]
    finding = run(AlwaysOnDetector, records, [roster_entry("d1")])["d1"]
    assert finding.evidence["coverage"] == 1.0
    assert finding.evidence["night_active_share"] == pytest.approx(12 / 60, abs=0.01)  # two 6-hour nights in 60 h
    assert finding.score == pytest.approx(0.35 * finding.evidence["night_active_share"] / 0.3, abs=1e-3)


def test_always_on_judges_only_laptops_that_never_sleep() -> None:
    """The whole-column prefilter (device runs) keeps the laptop awake for days, and drops one that
    sleeps every night and one that reported for a day only."""
    awake = [make_record("a-awake", 5 * k) for k in range(int(2.5 * 288))]
    sleeps = [make_record("b-sleeps", 5 * k) for k in range(int(2.5 * 288)) if (k // 12) % 24 < 9]
    short = [make_record("c-short", 5 * k) for k in range(288)]
    reports = flatten(short + sleeps + awake).reports
    first, count = device_runs(reports["device_code"].to_numpy())
    kept = AlwaysOnDetector()._candidates(reports, first, count)
    assert [reports["device_id"].iloc[first[at]] for at in kept] == ["a-awake"]


def test_always_on_idle_nights_are_quiet() -> None:
    records = [make_record("d1", 5 * k, input=user_input(active_seconds=0.0) if (k // 12 + 9) % 24 < 6 else
                           user_input()) for k in range(int(2.5 * 288))]
    assert run(AlwaysOnDetector, records, [roster_entry("d1")]) == {}


@pytest.mark.parametrize(
    ("seqs", "extra", "part", "expected"),
    [
        pytest.param([1, 2, 3, 1, 2], {}, "seq_reset", 0.35, id="reset"),
        pytest.param([1, 2, 3, 9, 10], {}, "seq_holes", 0.15, id="five-missing"),
        pytest.param([1, 2, 3, 4], {"hardware_id": ["hw-a", "hw-a", "hw-b", "hw-b"]}, "copied_identity", 0.7,
                     id="two-machines"),
    ],
)
def test_agent_health_sequence_and_identity(seqs, extra, part, expected) -> None:
    records = []
    for k, seq in enumerate(seqs):
        record = make_record("d1", 5 * k, seq=seq)
        if "hardware_id" in extra:
            record["hardware_id"] = extra["hardware_id"][k]
        records.append(record)
    records.append(make_record("other", (NOW - START).total_seconds() / 60))  # the fleet reports until NOW
    found = run(AgentHealthDetector, records, [roster_entry("d1")])
    assert found["d1"].evidence["parts"] == {part: expected, "silent": 0.15}  # and it went quiet 3 days ago
    assert found["d1"].score == pytest.approx(1 - (1 - expected) * 0.85)
    assert "other" not in found


def test_agent_health_two_small_gaps_are_not_holes() -> None:
    records = [make_record("d1", 5 * k, seq=seq) for k, seq in enumerate([1, 2, 4, 5, 7])]
    assert run(AgentHealthDetector, records, [roster_entry("d1")]) == {}


def test_host_mismatch_clock_abroad_is_travel() -> None:
    records = [make_record("d1", 5 * k, host=host("Europe/London", 0), geo={"country": "GB"}) for k in range(4)]
    records += [make_record("d1", 20 + 5 * k, host=host()) for k in range(2)]
    assert run(HostMismatchDetector, records, [roster_entry("d1")]) == {}


def test_agent_health_gap_in_an_always_on_laptop() -> None:
    # Every 5 minutes for a day, 4 hours of silence, then every 5 minutes again; seq continues.
    minutes = [5 * k for k in range(288)] + [1440 + 240 + 5 * k for k in range(100)]
    records = [make_record("d1", m, seq=n + 1) for n, m in enumerate(minutes)]
    records.append(make_record("other", (NOW - START).total_seconds() / 60))
    found = run(AgentHealthDetector, records, [roster_entry("d1")])
    assert found["d1"].evidence["silent_gaps"] == 1
    assert found["d1"].evidence["parts"]["silent_gaps"] == 0.15


def test_agent_health_nightly_sleep_is_no_gap() -> None:
    minutes = [day * 1440 + 5 * k for day in range(3) for k in range(108)]  # 9 h a day
    records = [make_record("d1", m, seq=n + 1) for n, m in enumerate(minutes)]
    assert run(AgentHealthDetector, records, [roster_entry("d1")]) == {}


def test_agent_health_steady_clock_skew_among_unknown_skews() -> None:
    # d1: a clock 300 s ahead in every report that says (missing skews in between: sorted apart in the
    # prefilter); d2: as steady and as far, but too few reports say; d3: not steady (median -150 s, spread 700 s).
    skews = {"d1": [None, 301, None, 299, None, 300, None, 302, None, 300, None, 300],
             "d2": [None, -300, None, -301, None, -299, None, -300, None, -302],
             "d3": [-500, -500, -500, -500, -500, 200, 200, 200, 200, 200]}
    records = []
    for device, values in skews.items():
        for k, skew in enumerate(values):
            record = make_record(device, 5 * k)
            record["clock_skew_seconds"] = skew
            records.append(record)
    found = run(AgentHealthDetector, records, [roster_entry(device) for device in skews])
    assert found["d1"].evidence["parts"] == {"clock_skew": 0.15}
    assert found["d1"].evidence["clock_skew_seconds_median"] == 300
    assert set(found) == {"d1"}
