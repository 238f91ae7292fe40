"""The probe runner: every failure of a probe becomes an errors[] entry; listeners span windows."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from farmwatch.agent.probes import registry
from farmwatch.agent.probes.base import Probe, ProbeContext, ProbeUnavailable
from farmwatch.agent.runner import Runner, agent_info
from farmwatch.contract import HardwareFacts, to_wire

T0 = datetime(2026, 11, 28, 4, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


class Hardware(Probe):
    name = "test_hardware"
    section = "hardware"

    def collect(self) -> HardwareFacts:
        self.problem("cannot read /sys/class/drm: permission denied")
        return HardwareFacts(usb=[], displays=[])


class Unavailable(Probe):
    name = "test_unavailable"
    section = "input"

    def collect(self) -> None:
        raise ProbeUnavailable("needs an X display; DISPLAY is not set")


class Broken(Probe):
    name = "test_broken"
    section = "sessions"

    def collect(self) -> None:
        raise RuntimeError("boom")


class WrongShape(Probe):
    name = "test_wrong_shape"
    section = "network"

    def collect(self) -> dict[str, object]:
        return {"interfaces": "eth0"}


class Listener(Probe):
    name = "test_listener"
    section = "remote_access"
    calls: list[str] = []

    def start(self) -> None:
        Listener.calls.append("start")

    def stop(self) -> None:
        Listener.calls.append("stop")

    def collect(self) -> list[object]:
        Listener.calls.append("collect")
        return []


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Register this file's probes, plus one whose module does not exist."""
    entries = {cls.name: f"{__name__}:{cls.__name__}" for cls in (Hardware, Unavailable, Broken, WrongShape, Listener)}
    entries["test_missing_module"] = "farmwatch.agent.probes.no_such_probe:Gone"
    for name, path in entries.items():
        monkeypatch.setitem(registry.PROBES, name, path)
    Listener.calls = []
    return list(entries)


def _errors(report: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in report["errors"]:
        found.setdefault(entry["probe"], []).append(entry["message"])
    return found


def test_each_kind_of_failure_becomes_an_error_entry_and_the_rest_still_report(probes: list[str]) -> None:
    runner = Runner(ProbeContext(), probes)
    runner.start()
    report = to_wire(runner.report("dev-1", 7, T0, T1))

    errors = _errors(report)
    assert errors["test_unavailable"] == ["needs an X display; DISPLAY is not set"]
    assert errors["test_broken"] == ["RuntimeError: boom"]
    assert errors["test_hardware"] == ["cannot read /sys/class/drm: permission denied"]
    assert errors["test_missing_module"][0].startswith("could not load: ModuleNotFoundError")
    assert "network.interfaces" in errors["test_wrong_shape"][0]
    assert report["hardware"] == {"usb": [], "displays": []}  # a partial failure keeps what it saw
    assert report["network"] is None and report["input"] is None and report["sessions"] is None
    assert (report["device_id"], report["seq"], report["schema"]) == ("dev-1", 7, "farmwatch.report/v1")
    assert report["window_start"] == "2026-11-28T04:00:00Z" and report["window_end"] == "2026-11-28T04:05:00Z"


def test_problems_belong_to_one_window_only(probes: list[str]) -> None:
    runner = Runner(ProbeContext(), ["test_hardware"])
    first = to_wire(runner.report("dev-1", 1, T0, T1))
    second = to_wire(runner.report("dev-1", 2, T1, T1 + timedelta(minutes=5)))
    assert len(first["errors"]) == 1 and len(second["errors"]) == 1


def test_listeners_start_once_and_keep_running_across_windows(probes: list[str]) -> None:
    runner = Runner(ProbeContext(), ["test_listener"])
    for seq in (1, 2):
        runner.start()
        runner.report("dev-1", seq, T0, T1)
    runner.stop()
    assert Listener.calls == ["start", "collect", "collect", "stop"]


@pytest.mark.parametrize(
    ("platform", "expected"),
    [pytest.param("linux", "linux", id="linux"), pytest.param("win32", "windows", id="windows"),
     pytest.param("darwin", "darwin", id="macos")],
)
def test_agent_info_names_the_os_as_the_contract_does(platform: str, expected: str) -> None:
    info = agent_info(platform)
    assert info.os == expected
    assert info.hostname and info.version


def test_agent_info_reads_no_installed_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """The version is the package's constant: a metadata lookup held ~0.35 MB of the agent's memory."""
    import importlib.metadata

    import farmwatch

    def refuse(name: str) -> None:
        raise AssertionError(f"read the installed metadata of {name}")

    monkeypatch.setattr(importlib.metadata, "distribution", refuse)
    assert agent_info("linux").version == farmwatch.__version__


class Stuck(Probe):
    name = "test_stuck"
    section = "hardware"
    release = threading.Event()

    def collect(self) -> HardwareFacts:
        Stuck.release.wait(30)  # an OS call that hangs until something gives way
        return HardwareFacts(usb=[], displays=[])


def test_a_hung_probe_is_skipped_until_it_returns_and_the_others_still_report(
    probes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.PROBES, "test_stuck", f"{__name__}:Stuck")
    Stuck.release = threading.Event()
    runner = Runner(ProbeContext(), ["test_stuck", "test_listener"], timeout=0.2)
    first = to_wire(runner.report("dev-1", 1, T0, T1))
    assert _errors(first)["test_stuck"] == ["collect() did not finish within 0.2 s; skipped until it returns"]
    assert first["remote_access"] == [] and first["hardware"] is None

    second = to_wire(runner.report("dev-1", 2, T0, T1))
    assert "has not returned yet" in _errors(second)["test_stuck"][0]

    Stuck.release.set()
    for thread in threading.enumerate():
        if thread.name == "probe-test_stuck":
            thread.join(5)
    third = to_wire(runner.report("dev-1", 3, T0, T1))
    assert "test_stuck" not in _errors(third) and third["hardware"] == {"usb": [], "displays": []}
