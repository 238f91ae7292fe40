"""remote_access: unapproved tools with live sessions, pinned scores and evidence."""

from __future__ import annotations

import pytest
from detector_records import NOW, connection, make_record, roster_entry, tool, user_input

from farmwatch.detectors.pipeline import score


def _finding(records, roster=()):
    verdicts = score(records, list(roster), [], NOW)
    found = [f for v in verdicts for f in v.findings if f.detector == "remote_access"]
    return found


def test_inbound_public_session_with_injected_input_names_the_tool() -> None:
    records = [
        make_record("d1", 0, input=user_input()),
        make_record("d1", 5, remote_access=[tool("anydesk", "AnyDesk", connection("175.45.176.71"))],
                    input=user_input(injected=900)),
    ]
    [finding] = _finding(records)
    assert "AnyDesk" in finding.summary and finding.attack == "T1219"
    assert finding.score == pytest.approx(0.55 + 0.15)
    assert finding.evidence["path"] == "direct inbound peer"
    assert finding.evidence["inbound_peers"] == ["175.45.176.71"]
    assert finding.evidence["injected_share_in_session"] == 1.0
    assert (finding.evidence["session_reports"], finding.evidence["driven_reports"]) == (1, 1)
    assert finding.severity == "high"


@pytest.mark.parametrize(
    ("approved", "expected"),
    [pytest.param((), 0.2, id="unapproved"), pytest.param(("anydesk",), 0.05, id="approved-quartered")],
)
def test_outbound_only_session_scores_low_and_approval_lowers_it(approved, expected) -> None:
    records = [make_record("d2", 0, remote_access=[tool("anydesk", "AnyDesk", connection("127.0.0.1", "outbound"))],
                           input=user_input())]
    [finding] = _finding(records, [roster_entry("d2", approved)])
    assert finding.score == pytest.approx(expected)
    assert finding.evidence["approved"] == bool(approved)
    assert finding.evidence["path"] == "relay or outbound peer"
    assert finding.evidence["driven_reports"] == 0 and "live outbound session in 1 report(s)" in finding.summary


@pytest.mark.parametrize(("peer", "countries", "expected"), [
    pytest.param("175.45.176.71", ["KP"], 0.55 + 0.15 + 0.1, id="foreign-direct-peer"),
    pytest.param("45.76.10.20", ["US"], 0.55 + 0.15, id="domestic-vps-peer"),
])
def test_direct_peer_registry_country(peer, countries, expected) -> None:
    records = [make_record("d5", 0, remote_access=[tool("rustdesk", "rustdesk", connection(peer))], input=user_input())]
    [finding] = _finding(records, [roster_entry("d5")])
    assert finding.evidence["inbound_peer_countries"] == countries
    assert finding.score == pytest.approx(expected)


def test_first_seen_tool_and_several_vendors_add_up() -> None:
    records = [make_record("d3", m, input=user_input()) for m in range(0, 24 * 60 + 5, 60)]
    records.append(make_record("d3", 25 * 60, remote_access=[
        tool("anydesk", "AnyDesk", connection("10.0.0.9", "outbound")),
        tool("rustdesk", "rustdesk"),
    ], input=user_input()))
    by_tool = {f.evidence["tool"]: f for f in _finding(records)}
    assert by_tool["anydesk"].score == pytest.approx(0.2 + 0.1 + 0.05)
    assert by_tool["anydesk"].evidence["first_seen_tool"] is True
    assert by_tool["anydesk"].evidence["unapproved_vendors"] == ["anydesk", "rustdesk"]
    assert by_tool["rustdesk"].score == pytest.approx(0.05 + 0.1 + 0.05)
    assert by_tool["rustdesk"].evidence["session_reports"] == 0


def test_no_tools_no_finding() -> None:
    assert _finding([make_record("d4", 0, remote_access=[], input=user_input())]) == []


def test_inbound_rdp_session_counts_as_remote_access() -> None:
    rdp = [{"kind": "rdp", "user": "u", "remote_ip": "10.8.0.2", "rtt_ms": 190.0, "min_rtt_ms": 185.0}]
    records = [make_record("d6", 5 * k, sessions=rdp, input=user_input()) for k in range(2)]
    [finding] = _finding(records, [roster_entry("d6")])
    assert finding.evidence["tool"] == "rdp" and finding.evidence["path"] == "direct inbound peer"
    assert finding.score == pytest.approx(0.55)  # a VPN address: not public, no country
    assert "Remote Desktop (RDP)" in finding.summary
    ssh = [{**rdp[0], "kind": "ssh"}]
    assert _finding([make_record("d7", 0, sessions=ssh)], [roster_entry("d7")]) == []


def _found_as(tool_id: str, process: str, ways: list[str], *connections: dict) -> dict:
    found = tool(tool_id, process, *connections)
    found["matched_by"] = ways
    return found


def _relayed(remote_ip: str, domain: str) -> dict:
    return {**connection(remote_ip, "outbound"), "domain": domain}


def test_a_renamed_binary_talking_to_a_relay_scores_above_the_vendors_own_name() -> None:
    own = [make_record("d7", 0, remote_access=[_found_as("anydesk", "AnyDesk", ["name", "domain"],
                                                         _relayed("203.0.113.9", "net.anydesk.com"))],
                       input=user_input())]
    renamed = [make_record("d8", 0, remote_access=[_found_as("anydesk", "notes", ["domain"],
                                                             _relayed("203.0.113.9", "net.anydesk.com"))],
                           input=user_input())]
    [vendor] = _finding(own, [roster_entry("d7")])
    [disguised] = _finding(renamed, [roster_entry("d8")])
    assert vendor.score == pytest.approx(0.2)
    assert disguised.score == pytest.approx(0.2 + 0.2)
    assert disguised.evidence["recognised_without_its_name"] is True and disguised.evidence["matched_by"] == ["domain"]
    assert disguised.evidence["relay_domains"] == ["net.anydesk.com"]
    assert "recognised by domain while running as notes" in disguised.summary
    assert vendor.evidence["recognised_without_its_name"] is False


def test_found_by_install_folder_only_adds_less_than_a_relay() -> None:
    records = [make_record("d9", 0, remote_access=[_found_as("dameware", "notes", ["path"],
                                                             connection("127.0.0.1", "outbound"))],
                           input=user_input())]
    [finding] = _finding(records, [roster_entry("d9")])
    assert finding.score == pytest.approx(0.2 + 0.1)


def test_an_approved_tool_stays_approved_however_it_was_recognised() -> None:
    records = [make_record("d10", 0, remote_access=[_found_as("anydesk", "notes", ["domain"],
                                                              _relayed("203.0.113.9", "net.anydesk.com"))],
                           input=user_input())]
    [finding] = _finding(records, [roster_entry("d10", ("anydesk",))])
    assert finding.evidence["approved"] is True
    assert finding.score == pytest.approx((0.2 + 0.2) * 0.25)


def test_a_tunnel_scores_a_share_of_interactive_remote_control() -> None:
    def session(tool_id: str, process: str) -> list[dict]:
        return [make_record("d11", 0, remote_access=[tool(tool_id, process, connection("127.0.0.1", "outbound"))],
                            input=user_input())]

    [tunnel] = _finding(session("tailscale", "tailscaled"), [roster_entry("d11")])
    [control] = _finding(session("anydesk", "AnyDesk"), [roster_entry("d11")])
    assert tunnel.score == pytest.approx(0.2 * 0.6) and control.score == pytest.approx(0.2)
    assert tunnel.evidence["kind"] == "tunnel" and "Unapproved tunnel Tailscale" not in control.summary
    assert tunnel.summary.startswith("Unapproved tunnel ")


def test_reports_from_older_agents_count_as_found_by_name() -> None:
    records = [make_record("d12", 0, remote_access=[tool("anydesk", "AnyDesk", connection("127.0.0.1", "outbound"))],
                           input=user_input())]
    [finding] = _finding(records, [roster_entry("d12")])
    assert finding.evidence["matched_by"] == ["name"] and finding.evidence["recognised_without_its_name"] is False


@pytest.mark.parametrize("dtype", ["str", object])
def test_distinct_values_per_device_and_tool_match_pandas_groupby_unique(dtype) -> None:
    import numpy as np
    import pandas as pd

    from farmwatch.detectors.signals.remote_access import _distinct

    rows = pd.DataFrame({
        "pair": np.array([5, 0, 5, 0, 4, 0, 5, 3], dtype=np.int64),
        "remote_ip": pd.Series(["b", None, "a", "c", "a", "c", "b", None], dtype=dtype),
    })
    expected = {key: [value for value in values if not pd.isna(value)]
                for key, values in rows.groupby("pair")["remote_ip"].unique().items()}
    expected = {key: values for key, values in expected.items() if values}  # a group with only missing: absent
    found = _distinct(rows, "remote_ip")
    assert found == expected
    assert found[5] == ["b", "a"]  # first appearance, not sorted
    assert 3 not in found


def test_findings_come_sorted_by_device_then_tool_whatever_order_the_rows_came_in() -> None:
    def uses(device: str, *tools: str) -> dict:
        return make_record(device, 0, remote_access=[tool(name, name, connection("127.0.0.1", "outbound"))
                                                     for name in tools], input=user_input())

    from farmwatch.detectors.base import Context
    from farmwatch.detectors.config import DetectionConfig
    from farmwatch.detectors.frame import flatten
    from farmwatch.detectors.signals.remote_access import RemoteAccessDetector

    frames = flatten([uses("d21", "vnc", "anydesk"), uses("d20", "rustdesk", "anydesk", "parsec")])
    found = RemoteAccessDetector().detect(frames, Context({}, {}, NOW, DetectionConfig()))
    assert [(item.device_id, item.finding.evidence["tool"]) for item in found] == [
        ("d20", "anydesk"), ("d20", "parsec"), ("d20", "rustdesk"), ("d21", "anydesk"), ("d21", "vnc")]
