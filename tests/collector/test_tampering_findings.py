"""Tampering is evidence (issue 16): each case sent through the real collector, read back as the
device's agent_health finding with its evidence (the analyst API's verdict)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
from collector_helpers import auth, report_for
from collector_process import RunningCollector

PAST = datetime(2026, 10, 2, 8, 35, tzinfo=timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _send(collector: RunningCollector, device: dict[str, object], seq: int, window_end: datetime,
          **agent: Any) -> None:
    report = report_for(str(device["device_id"]), seq, window_start=_stamp(window_end - timedelta(minutes=5)),
                        window_end=_stamp(window_end))
    report["agent"].update(agent)
    sent = httpx.post(f"{collector.url}/api/v1/reports", json=report, headers=auth(device["token"]))
    assert sent.status_code == 202, sent.text


def _agent_health(collector: RunningCollector, device: dict[str, object]) -> dict[str, Any] | None:
    verdict = httpx.get(f"{collector.url}/api/v1/devices/{device['device_id']}",
                        headers=auth(collector.analyst_token)).json()
    return next((f for f in verdict["findings"] if f["detector"] == "agent_health"), None)


def test_a_second_operating_system_and_hostname_under_one_enrolment(collector: RunningCollector) -> None:
    device = collector.enrol(hardware_id="hw-tamper-os", hostname="tp-anna")
    for seq in range(1, 4):
        _send(collector, device, seq, PAST + timedelta(minutes=5 * seq), os="linux", hostname="tp-anna")
    before = _agent_health(collector, device)
    assert before is None or "os_changed" not in before["evidence"]["parts"]
    _send(collector, device, 4, PAST + timedelta(minutes=20), os="windows", hostname="DESKTOP-7Q2K")
    finding = _agent_health(collector, device)
    assert finding is not None
    assert finding["evidence"]["operating_systems"] == ["linux", "windows"]
    assert finding["evidence"]["hostnames"] == ["tp-anna", "DESKTOP-7Q2K"]
    assert set(finding["evidence"]["parts"]) >= {"os_changed", "hostname_changed"}
    assert "2 operating systems" in finding["summary"]


def test_a_sequence_that_restarts(collector: RunningCollector) -> None:
    device = collector.enrol(hardware_id="hw-tamper-seq")
    for seq, minutes in ((5, 5), (6, 10), (7, 15), (1, 20), (2, 25)):  # later windows, lower seqs
        _send(collector, device, seq, PAST + timedelta(minutes=minutes))
    finding = _agent_health(collector, device)
    assert finding is not None and finding["evidence"]["seq_resets"] == 1
    assert "seq_reset" in finding["evidence"]["parts"]


def test_a_clock_set_ten_minutes_ahead(collector: RunningCollector) -> None:
    """The collector measures window end minus receipt itself; a steady +600 s is a clock set by hand."""
    steady = collector.enrol(hardware_id="hw-tamper-clock")
    honest = collector.enrol(hardware_id="hw-honest-clock")
    now = datetime.now(timezone.utc)
    for seq in range(1, 7):
        _send(collector, steady, seq, datetime.now(timezone.utc) + timedelta(seconds=600))
        _send(collector, honest, seq, now - timedelta(minutes=5 * (7 - seq)))  # a spooled backlog: varying lateness
    finding = _agent_health(collector, steady)
    assert finding is not None and "clock_skew" in finding["evidence"]["parts"]
    assert 590 <= finding["evidence"]["clock_skew_seconds_median"] <= 600
    assert "ahead" in finding["summary"]
    other = _agent_health(collector, honest)
    assert other is None or "clock_skew" not in other["evidence"]["parts"]


# --- an agent stopped, reinstalled or reset while the laptop runs --------------------------------

def _tiled(collector: RunningCollector, device: dict[str, object], windows: list[tuple[datetime, datetime]],
           boots: list[str], first_seq: int = 1) -> None:
    """Send one report per (start, end) window with the boot time given for it."""
    for offset, ((start, end), boot) in enumerate(zip(windows, boots, strict=True)):
        report = report_for(str(device["device_id"]), first_seq + offset, window_start=_stamp(start),
                            window_end=_stamp(end))
        report["host"]["boot_time"] = boot
        sent = httpx.post(f"{collector.url}/api/v1/reports", json=report, headers=auth(device["token"]))
        assert sent.status_code == 202, sent.text


def _windows(start: datetime, count: int) -> list[tuple[datetime, datetime]]:
    return [(start + timedelta(minutes=5 * k), start + timedelta(minutes=5 * (k + 1))) for k in range(count)]


BOOT, REBOOT = "2026-10-01T06:12:44Z", "2026-10-02T16:02:10Z"
MORNING = datetime(2026, 10, 2, 12, 0, tzinfo=timezone.utc)  # Friday, 08:00 in New York
RESUMED = MORNING + timedelta(minutes=15, hours=3)  # three hours later, 11:15 in New York


def test_an_agent_stopped_for_hours_of_the_working_day_while_the_system_stayed_up(
    collector: RunningCollector, tmp_path: Path
) -> None:
    stopped = collector.enrol(hardware_id="hw-tamper-stopped")
    rebooted = collector.enrol(hardware_id="hw-honest-reboot")
    asleep = collector.enrol(hardware_id="hw-honest-sleep")
    roster = tmp_path / "roster.csv"
    roster.write_text("device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools\n" + "".join(
        f"{d['device_id']},E{n},US,New York,40.71,-74.01,America/New_York,\n"
        for n, d in enumerate((stopped, rebooted, asleep))))
    assert collector.cli("roster", "import", "--db", collector.db_url, str(roster)).returncode == 0
    before, after = _windows(MORNING, 3), _windows(RESUMED, 3)
    _tiled(collector, stopped, before + after, [BOOT] * 6)  # a hole, the same boot: the agent was stopped
    _tiled(collector, rebooted, before + after, [BOOT] * 3 + [REBOOT] * 3)  # a hole and a new boot: switched off
    # A suspended laptop's running agent: the window after the sleep starts where the last one ended.
    slept = before + [(before[-1][1], RESUMED)] + after[1:]
    _tiled(collector, asleep, slept, [BOOT] * 6)

    finding = _agent_health(collector, stopped)
    assert finding is not None and "agent_stopped" in finding["evidence"]["parts"]
    hole = finding["evidence"]["agent_stopped"][0]
    assert (hole["from"], hole["to"]) == ("2026-10-02T12:15:00Z", "2026-10-02T15:15:00Z")
    assert hole["hours"] == 3.0 and hole["working_hours"] == 2.25  # 09:00-11:15 New York time
    assert finding["evidence"]["parts"]["agent_stopped"] == 0.45  # weighs more in working hours
    assert "while the system stayed up" in finding["summary"]
    for honest in (rebooted, asleep):
        other = _agent_health(collector, honest)
        assert other is None or "agent_stopped" not in other["evidence"]["parts"]
