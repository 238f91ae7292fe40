"""Tampering is evidence (issue 16): each case sent through the real collector, read back as the
device's agent_health finding with its evidence (the analyst API's verdict)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
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
