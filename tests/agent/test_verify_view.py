"""What `farmwatch-agent verify` shows a person (farmwatch/agent/verify_view.py): the progress bar,
the laptop's own observations from the fixture report, and the plain-language result."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from farmwatch.agent.verify_view import ADVICE, Progress, observations, result

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reports" / "report-linux-rustdesk.json"


class FakeTime:
    """A clock that moves only when slept on, so the bar's lines are exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_prints_a_line_every_ten_seconds_into_a_log() -> None:
    out, fake = io.StringIO(), FakeTime()
    Progress(out, fake.clock, fake.sleep).wait(25)
    lines = out.getvalue().splitlines()
    assert [line.split("]")[1].strip() for line in lines] == ["25 s left", "15 s left", "5 s left", "25 s"]
    assert lines[1].startswith("  observing [" + "#" * 12 + "." * 18 + "]")
    assert sum(fake.slept) == 25


def test_progress_redraws_in_place_on_a_terminal() -> None:
    out, fake = Terminal(), FakeTime()
    Progress(out, fake.clock, fake.sleep).wait(3)
    assert out.getvalue().count("\r") == 4 and out.getvalue().endswith("] 3 s\n")
    assert "\r  observing [" + "#" * 20 + "." * 10 + "]    1 s left" in out.getvalue()


def test_observations_say_what_each_probe_found() -> None:
    report = json.loads(FIXTURE.read_text())
    assert observations(report) == [
        "remote-access tool rustdesk (rustdesk) is running, connected: outbound 192.0.2.77:21117 (round trip 29 ms)",
        "remote sessions: ssh from 10.20.0.5",
        "network: vpn (wireguard), wifi; company anchors answered in eu-frankfurt 9 ms",
        "keyboard and mouse: active 122 s; no injected input",
        "hardware: 1 USB devices, 1 display(s)",
    ]
    quiet = {**report, "remote_access": [], "sessions": [], "errors": [{"probe": "input", "message": "no X display"}]}
    assert observations(quiet)[:2] == ["no remote-access tool is running", "remote sessions: none"]
    assert observations(quiet)[-1] == "could not check input: no X display"


def test_observations_say_which_sessions_ended_inside_the_window() -> None:
    report = json.loads(FIXTURE.read_text())
    (tool,) = report["remote_access"]
    ended = {**tool["connections"][0], "state": "CLOSED", "duration_seconds": 240.4}
    report["remote_access"] = [{**tool, "connections": [ended]}]
    report["sessions"] = [{**report["sessions"][0], "state": "CLOSED", "duration_seconds": 95.0},
                          {**report["sessions"][0], "state": "ESTABLISHED", "duration_seconds": 12.0}]
    assert observations(report)[:2] == [
        "remote-access tool rustdesk (rustdesk) was seen, connected: outbound 192.0.2.77:21117 (round trip 29 ms)"
        " (ended after 240 s)",
        "remote sessions: ssh from 10.20.0.5 (ended after 95 s); ssh from 10.20.0.5",
    ]


@pytest.mark.parametrize("verdict, headline", [("clear", "CLEAR"), ("review", "NEEDS REVIEW"), ("farm", "LIKELY LAPTOP FARM")])
def test_result_names_the_verdict_and_what_to_do(verdict: str, headline: str) -> None:
    assert result(verdict) == [f"Result: {headline}", f"What to do next: {ADVICE[verdict]}"]
