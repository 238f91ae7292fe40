"""The tactics farms move to (issue 16): what the detectors make of them on hand-made records, and
what ``farmwatch-simulate --tactic`` puts into a fleet."""

from __future__ import annotations

import csv
from datetime import datetime

import orjson
import pytest
from detector_records import make_record, roster_entry, run, user_input

from farmwatch.contract import IngestRecord
from farmwatch.detectors.signals.agent_health import AgentHealthDetector
from farmwatch.detectors.signals.input_rhythm import InputRhythmDetector
from farmwatch.detectors.signals.ipkvm import IpKvmDetector
from farmwatch.simulator.cli import write_fleet
from farmwatch.simulator.places import FARM_TOWNS
from farmwatch.simulator.tactics import CAPTURE_DONGLE_EDID, GENERIC_KEYBOARD, REFLASHED_EDID, TACTICS

PASTED = {"key_interval_ms_p10": 22.0, "key_interval_ms_p50": 23.0, "key_interval_ms_p90": 26.0,
          "key_burst_fraction": 0.0}


def _typists(device: str, pasted_every: int | None, injected: int = 0) -> list[dict]:
    """20 windows of ``device``: hands, with every ``pasted_every``-th window typed at a fixed pace."""
    return [make_record(device, 5 * k, input=user_input(injected=injected, **(
        PASTED if pasted_every and k % pasted_every == 0 else {}))) for k in range(20)]


def _resumed(gap_minutes: int, boots: tuple[str | None, str | None]) -> list[dict]:
    """Three tiled windows, a gap, three more (START is Monday 09:00 in Chicago); each side's boot time."""
    records = []
    for k, minutes in enumerate((5, 10, 15, 20 + gap_minutes, 25 + gap_minutes, 30 + gap_minutes)):
        record = make_record("d1", minutes, host={
            "timezone": "America/Chicago", "utc_offset_minutes": -360, "locale": "en_US", "keyboard_layouts": [],
            "input_methods": [], "boot_time": boots[k >= 3], "users": []})
        records.append(record)
    return records


BOOT, LATER = "2026-11-23T06:00:00Z", "2026-11-23T17:40:00Z"


@pytest.mark.parametrize(("gap", "boots", "roster", "score"), [
    pytest.param(120, (BOOT, BOOT), True, 0.45, id="stopped-two-working-hours"),
    pytest.param(120, (BOOT, BOOT), False, 0.3, id="stopped-no-roster-zone"),
    pytest.param(120, (BOOT, LATER), True, None, id="rebooted"),
    pytest.param(120, (BOOT, None), True, None, id="boot-unknown"),
    pytest.param(20, (BOOT, BOOT), True, None, id="restarted-in-minutes"),
])
def test_an_agent_stopped_while_the_system_stayed_up(gap: int, boots: tuple, roster: bool, score: float | None) -> None:
    found = run(AgentHealthDetector, _resumed(gap, boots), roster=[roster_entry("d1")] if roster else [])
    parts = found["d1"].evidence["parts"] if "d1" in found else {}
    assert parts.get("agent_stopped") == score


def test_keys_at_a_machines_fixed_pace_are_a_device_typing() -> None:
    found = run(InputRhythmDetector, _typists("kvm", 2) + _typists("hands", None))
    assert found["kvm"].evidence["too_regular_windows"] == 10
    assert found["kvm"].evidence["parts"] == {"regular": 0.6}
    assert "fixed pace" in found["kvm"].summary
    assert "hands" not in found


def test_a_keyboard_macro_now_and_then_and_injected_auto_type_are_not_a_device_typing() -> None:
    found = run(InputRhythmDetector, _typists("macro", 10) + _typists("autotype", 2, injected=50))
    for device in ("macro", "autotype"):  # 2 of 20 windows; software typing is marked injected
        assert device not in found or "regular" not in found[device].evidence["parts"]


@pytest.mark.parametrize(("display", "score"), [
    pytest.param(CAPTURE_DONGLE_EDID, 0.9, id="capture-dongle-edid"),
    pytest.param(REFLASHED_EDID, 0.1, id="reflashed-edid-only-lid-closed"),
])
def test_an_hdmi_capture_dongle_behind_the_display_port(display: str, score: float) -> None:
    vendor, product, manufacturer, name = GENERIC_KEYBOARD
    hardware = {"usb": [{"vendor_id": vendor, "product_id": product, "manufacturer": manufacturer, "product": name,
                         "interface_classes": ["hid"]}],
                "displays": [{"name": display, "manufacturer": None, "serial_hash": None}]}
    finding = run(IpKvmDetector, [make_record("d1", 5 * k, hardware=hardware) for k in range(3)])["d1"]
    assert finding.score == score


@pytest.fixture(scope="module")
def fleets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[dict], dict[str, dict[str, str]]]]:
    """Each tactic's fleet: its records, and labels.csv and roster.csv rows joined by device id."""
    made = {}
    for tactic in TACTICS:
        files = write_fleet(tmp_path_factory.mktemp(tactic), seed=4, legit=40, farms=12, days=3, tactics=(tactic,))
        records = [orjson.loads(line) for line in files.records.read_bytes().splitlines()]
        with files.labels.open() as handle, files.roster.open() as roster:
            labels = {row["device_id"]: row for row in csv.DictReader(handle)}
            for row in csv.DictReader(roster):
                labels[row["device_id"]]["city"] = row["city"]
        made[tactic] = (records, labels)
    return made


def _of(records: list[dict], labels: dict[str, dict[str, str]], mark: str, label: str) -> dict[str, list[dict]]:
    touched: dict[str, list[dict]] = {}
    for record in records:
        row = labels[record["report"]["device_id"]]
        if row["label"] == label and mark in row["kind"]:
            touched.setdefault(record["report"]["device_id"], []).append(record)
    return touched


def test_every_tactic_touches_farms_and_writes_valid_records(fleets) -> None:
    for tactic, (records, labels) in fleets.items():
        assert _of(records, labels, f"/{tactic}", "farm"), tactic
        for record in records[::50]:
            IngestRecord.model_validate_json(orjson.dumps(record))


def test_tampering_stops_agents_on_a_running_system(fleets) -> None:
    records, labels = fleets["tampering"]
    holes = 0
    for device_records in _of(records, labels, "/tampering", "farm").values():
        for before, after in zip(device_records, device_records[1:]):
            gap = datetime.fromisoformat(after["report"]["window_start"]) - \
                datetime.fromisoformat(before["report"]["window_end"])
            same_boot = before["report"]["host"]["boot_time"] == after["report"]["host"]["boot_time"]
            holes += gap.total_seconds() >= 3600 and same_boot
    assert holes > 0
    assert any(r["enrolments"] == 2 for r in records) and any(r["seq_conflicts"] > 0 for r in records)


def test_vps_hop_operators_are_near_and_in_city_farms_sit_where_the_roster_says(fleets) -> None:
    records, labels = fleets["vps-hop"]
    inbound = [c["min_rtt_ms"] for r in records for tool in r["report"]["remote_access"] for c in tool["connections"]
               if c["direction"] == "inbound" and "/vps-hop" in labels[r["report"]["device_id"]]["kind"]]
    assert inbound and max(inbound) < 40  # the laptop sees only the near hop


def test_reflashed_kvms_show_generic_keyboards_and_capture_or_reflashed_displays(fleets) -> None:
    records, labels = fleets["kvm-reflashed"]
    touched = _of(records, labels, "/kvm-reflashed", "farm")
    assert touched
    for device_records in touched.values():
        hardware = device_records[0]["report"]["hardware"]
        assert [u["vendor_id"] for u in hardware["usb"]][-1] == GENERIC_KEYBOARD[0]
        assert hardware["displays"][-1]["name"] in (CAPTURE_DONGLE_EDID, REFLASHED_EDID)


def test_in_city_rosters_name_the_farms_town(fleets) -> None:
    records, labels = fleets["in-city"]
    farms = _of(records, labels, "/in-city", "farm")
    assert farms and {labels[device]["city"] for device in farms} <= {town.name for town in FARM_TOWNS}
