"""hardware_id: the OS machine id per platform, sent only as a keyed hash.

macOS and Windows cannot run on the Linux test box: their parsers read command output written by
hand in the real tools' layout (tests/fixtures/machine_id/, see its README), passed in through the injected ``run``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from farmwatch.agent.errors import AgentError
from farmwatch.agent.delivery.hardware_id import hardware_id, os_machine_id

MACHINE_ID = Path(__file__).resolve().parents[1] / "fixtures" / "machine_id"


def replay(name: str, expected_argv: list[str]):
    def run(argv: Sequence[str]) -> str:
        assert list(argv) == expected_argv
        return (MACHINE_ID / name).read_bytes().decode()

    return run


def test_macos_reads_ioplatformuuid_from_ioreg() -> None:
    run = replay("ioreg-macos14.txt", ["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"])
    assert os_machine_id("darwin", run) == "7C1E8D0A-3B9F-5E21-A1C4-2D6F0B9E8A17"


def test_windows_reads_machineguid_from_the_registry() -> None:
    argv = ["reg", "query", r"HKLM\SOFTWARE\Microsoft\Cryptography", "/v", "MachineGuid"]
    assert os_machine_id("win32", replay("reg-query-win11.txt", argv)) == "5b8c1a3e-92d4-4f6b-8e0a-7c2d1f9b4e63"


def test_linux_reads_etc_machine_id(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    assert os_machine_id("linux", etc_root=tmp_path / "etc") == "3d1219c7c4c5404aaa1f6d2a48adfda4"


def test_linux_falls_back_to_the_dbus_copy(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "var/lib/dbus").mkdir(parents=True)
    (tmp_path / "var/lib/dbus/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    assert os_machine_id("linux", etc_root=tmp_path / "etc") == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("platform", "output", "needle"),
    [pytest.param("darwin", "+-o Root  <class IORegistryEntry>\n", "IOPlatformUUID", id="macos-no-uuid"),
     pytest.param("win32", "ERROR: The system was unable to find the specified registry key or value.\n",
                  "MachineGuid", id="windows-no-guid")],
)
def test_missing_ids_are_one_clear_error(platform: str, output: str, needle: str) -> None:
    with pytest.raises(AgentError, match=needle):
        os_machine_id(platform, lambda argv: output)


def test_a_failing_command_is_an_agent_error() -> None:
    def run(argv: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(1, list(argv))

    with pytest.raises(AgentError, match="ioreg .* failed"):
        os_machine_id("darwin", run)


def test_missing_linux_machine_id_is_an_agent_error(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="machine-id"):
        os_machine_id("linux", etc_root=tmp_path)


def test_hardware_id_is_a_stable_keyed_hash_that_hides_the_machine_id() -> None:
    machine = "7C1E8D0A-3B9F-5E21-A1C4-2D6F0B9E8A17"
    hashed = hardware_id(machine)
    assert len(hashed) == 64 and int(hashed, 16) >= 0
    assert hardware_id(machine.lower() + "\n") == hashed  # case and whitespace do not change it
    assert machine.lower() not in hashed
    assert hardware_id("5b8c1a3e-92d4-4f6b-8e0a-7c2d1f9b4e63") != hashed
