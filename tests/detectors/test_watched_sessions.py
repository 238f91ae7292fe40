"""Sessions the agent's socket watcher saw begin and end inside one window (issue 16) are evidence:
the frame's columns, session_distance and remote_access on hand-made records, pinned."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from detector_records import START, connection, make_record, roster_entry, run, tool

from farmwatch.detectors.frame import flatten
from farmwatch.detectors.signals.remote_access import RemoteAccessDetector
from farmwatch.detectors.signals.session_distance import SessionDistanceDetector

FAR_PEER = "175.45.176.71"
WATCHED = {"first_seen": "2026-11-23T14:56:00Z", "last_seen": "2026-11-23T14:59:00Z", "duration_seconds": 180.0}


def _ended_ssh(seconds: float, rtt: float = 190.0) -> dict:
    return {"kind": "ssh", "user": "dev", "remote_ip": FAR_PEER, "rtt_ms": rtt + 5, "min_rtt_ms": rtt,
            "state": "CLOSED", **WATCHED, "duration_seconds": seconds}


def _ended_anydesk(seconds: float = 180.0) -> dict:
    return tool("anydesk", "AnyDesk", {**connection(FAR_PEER, min_rtt_ms=190.0, state="CLOSED"), **WATCHED,
                                       "duration_seconds": seconds})


def test_the_frames_carry_the_watchers_columns_and_older_records_leave_them_empty() -> None:
    frames = flatten([
        make_record("d1", 0, remote_access=[_ended_anydesk()], sessions=[_ended_ssh(240.0)]),
        make_record("d1", 5, remote_access=[tool("anydesk", "AnyDesk", connection(FAR_PEER))],
                    sessions=[{"kind": "ssh", "user": "dev", "remote_ip": FAR_PEER}]),
    ])
    ended, older = frames.tools.to_dict("records")
    assert (ended["state"], ended["live"], ended["duration_seconds"]) == ("CLOSED", True, 180.0)
    assert (ended["first_seen"], ended["last_seen"]) == (WATCHED["first_seen"], WATCHED["last_seen"])
    assert older["live"] and pd.isna(older["first_seen"]) and math.isnan(older["duration_seconds"])
    ended_session, older_session = frames.sessions.to_dict("records")
    assert (ended_session["state"], ended_session["duration_seconds"]) == ("CLOSED", 240.0)
    assert pd.isna(older_session["state"]) and math.isnan(older_session["duration_seconds"])


def test_a_far_ssh_session_that_began_and_ended_inside_one_window_is_found() -> None:
    finding = run(SessionDistanceDetector, [make_record("d1", 0, sessions=[_ended_ssh(240.0)])],
                  [roster_entry("d1")])["d1"]
    assert finding.score == pytest.approx(0.85)
    assert (finding.evidence["session_reports"], finding.evidence["session_seconds"]) == (1, 240.0)
    assert finding.evidence["min_rtt_ms"] == 190.0
    assert "seen for 240 s" in finding.summary
    assert finding.first_seen == START


@pytest.mark.parametrize("seconds", [pytest.param(30.0, id="shorter-than-a-minute"),
                                     pytest.param(None, id="older-agent-no-duration")])
def test_one_window_of_a_short_or_unwatched_ssh_session_stays_quiet(seconds: float | None) -> None:
    session = _ended_ssh(240.0)
    session["duration_seconds"] = seconds
    assert run(SessionDistanceDetector, [make_record("d1", 0, sessions=[session])], [roster_entry("d1")]) == {}


def test_remote_access_scores_a_session_that_ended_inside_its_window_as_a_live_one() -> None:
    ended = run(RemoteAccessDetector, [make_record("d1", 0, remote_access=[_ended_anydesk(240.0)])],
                [roster_entry("d1")])["d1"]
    still_open = run(RemoteAccessDetector, [make_record("d1", 0, remote_access=[
        tool("anydesk", "AnyDesk", connection(FAR_PEER, min_rtt_ms=190.0))])], [roster_entry("d1")])["d1"]
    assert ended.score == pytest.approx(still_open.score) == pytest.approx(0.55 + 0.15 + 0.1)  # inbound, public, KP
    assert (ended.evidence["ended_in_window_connections"], ended.evidence["longest_session_seconds"]) == (1, 240.0)
    assert (still_open.evidence["ended_in_window_connections"], still_open.evidence["longest_session_seconds"]) == (
        0, None)
    assert "1 connection(s) ended inside their window" in ended.summary


def test_an_ended_rdp_session_counts_for_remote_access_with_its_state() -> None:
    rdp = {"kind": "rdp", "user": None, "remote_ip": FAR_PEER, "min_rtt_ms": 190.0, "state": "CLOSED", **WATCHED}
    finding = run(RemoteAccessDetector, [make_record("d1", 0, sessions=[rdp])], [roster_entry("d1")])["d1"]
    assert finding.evidence["tool"] == "rdp" and finding.evidence["ended_in_window_connections"] == 1
    assert finding.evidence["session_reports"] == 1
