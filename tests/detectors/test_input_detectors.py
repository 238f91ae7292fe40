"""input_rhythm, ipkvm, fleet_anomaly on hand-made records: pinned scores and evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from detector_records import connection, make_record, roster_entry, run, tool, user_input
from sklearn.ensemble import IsolationForest

from farmwatch.detectors.base import Context
from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.signals.fleet_anomaly import FleetAnomalyDetector, _largest_first, device_features
from farmwatch.detectors.frame import flatten
from farmwatch.detectors.signals.input_rhythm import InputRhythmDetector
from farmwatch.detectors.signals.ipkvm import IpKvmDetector

REMOTE = {"key_interval_ms_p10": 3.0, "key_burst_fraction": 0.2, "mouse_rate_hz_median": 25.0,
          "mouse_jump_fraction": 0.04}


def _fleet(odd_device_windows: list[dict], locals_: int = 5) -> list[dict]:
    """Local typists plus device 'x' whose windows are given."""
    records = [make_record(f"l{n}", 5 * k, input=user_input()) for n in range(locals_) for k in range(20)]
    return records + odd_device_windows


def test_input_rhythm_remote_windows() -> None:
    windows = [make_record("x", 5 * k, input=user_input(**REMOTE)) for k in range(20)]
    finding = run(InputRhythmDetector, _fleet(windows))["x"]
    assert finding.evidence["remote_like_share"] == 1.0 and finding.evidence["typed_windows"] == 20
    assert finding.evidence["parts"] == {"rhythm": 0.85}
    assert finding.score == pytest.approx(0.85)


def test_input_rhythm_one_odd_window_proves_nothing() -> None:
    windows = [make_record("x", 5 * k, input=user_input(**(REMOTE if k == 0 else {}))) for k in range(20)]
    assert "x" not in run(InputRhythmDetector, _fleet(windows))


def test_input_rhythm_injected_input_unless_an_approved_tool_drives() -> None:
    helpdesk = [tool("teamviewer", "TeamViewer", connection("52.9.12.40", "outbound"))]
    windows = [make_record("x", 5 * k, input=user_input(injected=3000), remote_access=helpdesk if k < 10 else [])
               for k in range(20)]
    found = run(InputRhythmDetector, _fleet(windows), [roster_entry("x", ("teamviewer",))])
    assert found["x"].evidence["injected_share"] == 0.5  # the 10 windows without the approved session
    assert found["x"].score == pytest.approx(0.35)


def test_input_rhythm_remote_desktop_virtual_devices() -> None:
    windows = [make_record("x", 5 * k, input=user_input(virtual_devices=["xrdpMouse", "Virtual core XTEST pointer"]))
               for k in range(3)]
    finding = run(InputRhythmDetector, _fleet(windows))["x"]
    assert finding.evidence["virtual_devices"] == ["xrdpMouse"]  # XTEST exists on every X server
    assert finding.score == pytest.approx(0.4)


def _hardware(usb=(), displays=("eDP-1 panel",)) -> dict:
    return {"usb": [{"vendor_id": v, "product_id": p, "manufacturer": m, "product": n, "interface_classes": ["hid"]}
                    for v, p, m, n in usb],
            "displays": [{"name": d, "manufacturer": None, "serial_hash": None} for d in displays]}


@pytest.mark.parametrize(
    ("hardware", "score", "device", "attack"),
    [
        pytest.param(_hardware([("1d6b", "0104", "PiKVM", "PiKVM Composite Device")]), 0.9, "PiKVM", "T1219.003",
                     id="pikvm-default"),
        pytest.param(_hardware([("3346", "1009", "sipeed", "NanoKVM")]), 0.9, "NanoKVM", "T1219.003", id="nanokvm"),
        pytest.param(_hardware([("1d6b", "0104", "Acme", "Gadget")]), 0.35, "generic gadget", "T1200",
                     id="generic-gadget"),
        pytest.param(_hardware(displays=("PiKVM V4 Plus",)), 0.9, "PiKVM", "T1219.003", id="pikvm-edid"),
        pytest.param(_hardware(displays=("DELL U2720Q",)), 0.1, None, "T1200", id="lid-closed-external-only"),
    ],
)
def test_ipkvm(hardware, score, device, attack) -> None:
    records = [make_record("d1", 5 * k, hardware=hardware) for k in range(3)]
    finding = run(IpKvmDetector, records)["d1"]
    assert finding.score == score and finding.attack == attack
    assert finding.evidence.get("device") == device


def test_ipkvm_desk_kvm_switch_is_quiet() -> None:
    hardware = _hardware([("0557", "2419", "ATEN", "CS1924 KVM Switch")], ("eDP-1 panel", "DELL U2720Q"))
    assert run(IpKvmDetector, [make_record("d1", 5 * k, hardware=hardware) for k in range(3)]) == {}


def test_fleet_anomaly_names_what_sets_the_outlier_apart() -> None:
    rng = np.random.default_rng(3)
    records = []
    for n in range(30):
        for k in range(12):
            timing = user_input(key_burst_fraction=float(rng.uniform(0.005, 0.015)),
                                mouse_rate_hz_median=float(rng.uniform(90, 130)))
            records.append(make_record(f"d{n:02}", 5 * k, input=timing))
    records += [make_record("x", 5 * k, input=user_input(injected=2000, **REMOTE)) for k in range(12)]
    roster = [roster_entry(f"d{n:02}") for n in range(30)] + [roster_entry("x")]
    found = run(FleetAnomalyDetector, records, roster)
    finding = found["x"]
    named = finding.evidence["features"]
    assert len(named) == 3 and named["key_burst_median"]["value"] == 0.2
    assert named["key_burst_median"]["fleet_median"] == pytest.approx(0.01, abs=0.003)
    assert "bunched keystrokes" in finding.summary
    # The same forest, fitted independently, gives the score the finding carries.
    context = Context({e.device_id: e for e in roster}, {}, None, DetectionConfig())  # type: ignore[arg-type]
    features = device_features(flatten(records), context)
    forest = IsolationForest(n_estimators=200, random_state=0).fit(features.to_numpy())
    margin = float(forest.decision_function(features.loc[["x"]].to_numpy())[0])
    assert finding.score == pytest.approx(round(0.3 * min(-margin / 0.15, 1.0), 4))
    assert all(f.score <= finding.score for f in found.values())


@pytest.mark.parametrize("values", [
    [0.5, 3.0, 0.5, 3.0, 1.0, 3.0, 0.0, 0.5, 2.0],  # ties: the order pandas gives them is kept
    [1.0, float("nan"), 2.0, 2.0, float("nan"), 0.0, 2.0, 1.0, 1.0],  # NaN last
    [4.0] * 9,
])
def test_fleet_anomaly_names_features_in_the_order_sort_values_gives(values: list[float]) -> None:
    # The features explaining an outlier are its largest |z| first, ties as Series.sort_values(ascending=False)
    # orders them (the evidence and summary name the first three).
    expected = pd.Series(values).sort_values(ascending=False).index.to_numpy()
    assert _largest_first(np.array(values)).tolist() == expected.tolist()


def test_fleet_anomaly_scores_the_frames_it_is_given() -> None:
    """Fitted on the fleet, it judges whatever frames ``detect`` gets: 'x' alone gives the same
    finding as inside the fleet, and frames without 'x' give no finding about it."""
    rng = np.random.default_rng(5)
    records = [make_record(f"d{n:02}", 5 * k, input=user_input(key_burst_fraction=float(rng.uniform(0.005, 0.015))))
               for n in range(30) for k in range(12)]
    odd = [make_record("x", 5 * k, input=user_input(injected=2000, **REMOTE)) for k in range(12)]
    roster = {e.device_id: e for e in [roster_entry(f"d{n:02}") for n in range(30)] + [roster_entry("x")]}
    context = Context(roster, {}, None, DetectionConfig())  # type: ignore[arg-type]
    detector = FleetAnomalyDetector().fit(flatten(records + odd), context)
    in_fleet = {item.device_id: item.finding for item in detector.detect(flatten(records + odd), context)}
    alone = detector.detect(flatten(odd), context)
    assert [item.device_id for item in alone] == ["x"] and alone[0].finding == in_fleet["x"]
    assert "x" not in {item.device_id for item in detector.detect(flatten(records), context)}


def test_fleet_anomaly_full_margin_sets_how_fast_the_score_saturates() -> None:
    rng = np.random.default_rng(5)
    records = [make_record(f"d{n:02}", 5 * k, input=user_input(key_burst_fraction=float(rng.uniform(0.005, 0.015))))
               for n in range(30) for k in range(12)]
    records += [make_record("x", 5 * k, input=user_input(injected=2000, **REMOTE)) for k in range(12)]
    roster = [roster_entry(f"d{n:02}") for n in range(30)] + [roster_entry("x")]
    wide = run(FleetAnomalyDetector, records, roster, full_margin=10.0)["x"]
    margin = wide.evidence["decision"]
    assert margin < 0 and wide.score == pytest.approx(round(0.3 * -margin / 10.0, 4))
    assert wide.score < run(FleetAnomalyDetector, records, roster)["x"].score


def test_input_rhythm_a_laptop_that_turns_remote_is_judged_on_its_recent_windows() -> None:
    windows = [make_record("x", 5 * k, input=user_input(**(REMOTE if k >= 24 else {}))) for k in range(36)]
    finding = run(InputRhythmDetector, _fleet(windows))["x"]
    assert finding.evidence["remote_like_share"] == pytest.approx(12 / 36, abs=1e-3)
    assert finding.evidence["recent_remote_like_share"] == pytest.approx(12 / 18, abs=1e-3)
    assert finding.score == pytest.approx(0.85)  # (2/3 - 0.1) / 0.4 > 1
    assert "67% since" in finding.summary


def test_input_rhythm_fleet_baseline_needs_a_fleet() -> None:
    """A fleet of trackpads at ~40 Hz moves the mouse-rate bound; two devices are no fleet."""
    timing = {"key_burst_fraction": 0.07}
    slow = [make_record(f"t{n:02}", 5 * k, input=user_input(mouse_rate_hz_median=40.0 + n % 3, **timing))
            for n in range(25) for k in range(12)]
    assert run(InputRhythmDetector, slow) == {}  # the whole fleet types like this: nobody stands out
    few = run(InputRhythmDetector, slow[:24])  # two devices: physical thresholds apply
    assert set(few) == {"t00", "t01"}
