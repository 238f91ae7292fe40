"""Hardware probe over captured sysfs trees (tests/fixtures/sysfs/) and EDID blobs built here,
and over macOS/Windows tool outputs written by hand (tests/fixtures/host/).

No IP-KVM can be plugged into a test box, so the trees are replayed (see the fixtures' README);
the EDID blobs are built by :func:`build_edid` following VESA E-EDID, and the parser is also
checked against the byte layout independently (manufacturer letters, checksum).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from farmwatch.agent.probes.hardware.edid import EdidError, parse_edid
from farmwatch.agent.probes.hardware.hardware_os import WINDOWS_MONITOR_SCRIPT, WINDOWS_USB_SCRIPT
from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.hardware.probe import HardwareProbe
from farmwatch.agent.probes.salted import salted_sha256
from farmwatch.agent.probes.hardware.usb_sysfs import interface_class_name
from farmwatch.contract import to_wire

SYSFS = Path(__file__).parents[1] / "fixtures" / "sysfs"
HOST = Path(__file__).parents[1] / "fixtures" / "host"  # macOS/Windows tool outputs, written by hand
SALT = "acme-salt"


def build_edid(manufacturer: str, name: str | None = None, serial_text: str | None = None,
               serial_number: int = 0, product_code: int = 0x1234, checksum_ok: bool = True) -> bytes:
    """A 128-byte EDID base block: header, packed PNP id, serials, descriptors, checksum."""
    block = bytearray(128)
    block[0:8] = b"\x00\xff\xff\xff\xff\xff\xff\x00"
    letters = [ord(c) - ord("A") + 1 for c in manufacturer]
    block[8:10] = (letters[0] << 10 | letters[1] << 5 | letters[2]).to_bytes(2, "big")
    block[10:12] = product_code.to_bytes(2, "little")
    block[12:16] = serial_number.to_bytes(4, "little")
    block[18:20] = bytes([1, 4])  # EDID 1.4
    # Descriptor 1: a detailed timing (1920x1080@60, pixel clock 148.5 MHz), which is not text.
    block[54:56] = (14850).to_bytes(2, "little")
    texts = [(0xFC, name), (0xFF, serial_text)]
    offset = 72
    for tag, text in texts:
        if text is None:
            continue
        encoded = text.encode("ascii")[:13]
        body = encoded + (b"\x0a" + b" " * 12)[: 13 - len(encoded)]
        block[offset : offset + 18] = bytes([0, 0, 0, tag, 0]) + body
        offset += 18
    while offset <= 108:  # unused descriptor slots: "dummy descriptor" tag 0x10
        block[offset : offset + 18] = bytes([0, 0, 0, 0x10]) + bytes(14)
        offset += 18
    block[127] = (-sum(block[:127])) % 256
    if not checksum_ok:
        block[127] = (block[127] + 1) % 256
    return bytes(block)


def tree(name: str, tmp_path: Path, edids: dict[str, bytes]) -> Path:
    """A copy of a captured tree with the given EDID blobs written into its DRM connectors."""
    root = tmp_path / name
    shutil.copytree(SYSFS / name, root)
    for connector in (root / "class" / "drm").glob("card*-*"):
        (connector / "edid").write_bytes(edids.get(connector.name, b""))  # empty: nothing plugged in
    return root


def collect(root: Path) -> tuple[dict, list[str]]:
    probe = HardwareProbe(ProbeContext(platform="linux", sys_root=root, salt=SALT))
    return to_wire(probe.collect()), probe.problems


ROOT_HUB_2 = {"vendor_id": "1d6b", "product_id": "0002", "manufacturer": "Linux 6.8.0-45-generic xhci-hcd",
              "product": "xHCI Host Controller", "interface_classes": ["hub"]}


def test_edid_helper_layout_and_parser() -> None:
    blob = build_edid("DEL", name="DELL U2720Q", serial_text="F8KX123")
    assert len(blob) == 128 and sum(blob) % 256 == 0
    # "DEL": D=4, E=5, L=12 -> 0b0_00100_00101_01100 = 0x10AC, Dell's well-known bytes 8-9.
    assert blob[8:10] == b"\x10\xac"
    assert parse_edid(blob).manufacturer == "DEL"
    assert parse_edid(blob).name == "DELL U2720Q"
    assert parse_edid(blob).serial == "F8KX123"
    assert parse_edid(build_edid("BOE", serial_number=4242)).serial == "4242"
    assert parse_edid(build_edid("BOE")).serial is None


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(build_edid("DEL", checksum_ok=False), "EDID checksum mismatch: bytes sum to 1 mod 256, expected 0", id="checksum"),
        pytest.param(b"\x00" * 128, "EDID header is 0000000000000000, expected 00ffffffffffff00", id="header"),
        pytest.param(b"\x00\xff\xff", "EDID is 3 bytes, a base block needs 128", id="short"),
    ],
)
def test_bad_edid_is_refused_with_the_reason(blob: bytes, message: str) -> None:
    with pytest.raises(EdidError) as caught:
        parse_edid(blob)
    assert str(caught.value) == message


def test_pikvm_default_identity(tmp_path: Path) -> None:
    root = tree("pikvm", tmp_path, {"card0-HDMI-A-1": build_edid("TSB", name="Toshiba-H2C", serial_number=1)})
    facts, problems = collect(root)
    assert facts == {
        "usb": [
            {"vendor_id": "1d6b", "product_id": "0104", "manufacturer": "PiKVM", "product": "PiKVM Composite Device",
             "interface_classes": ["hid", "mass_storage"]},
            ROOT_HUB_2,
        ],
        "displays": [{"name": "Toshiba-H2C", "manufacturer": "TSB", "serial_hash": salted_sha256(SALT, "1")}],
    }
    assert problems == []


def test_rebranded_kvm_shows_only_its_functions(tmp_path: Path) -> None:
    root = tree("pikvm-rebranded", tmp_path, {
        "card1-HDMI-A-1": build_edid("DEL", name="DELL U2720Q", serial_text="F8KX123"),
        "card1-eDP-1": build_edid("BOE", serial_number=0),
    })
    facts, problems = collect(root)
    assert facts == {
        "usb": [
            {"vendor_id": "046d", "product_id": "c52b", "manufacturer": "Logitech", "product": "USB Receiver",
             "interface_classes": ["hid", "mass_storage", "cdc_ethernet", "cdc_data"]},
            ROOT_HUB_2,
        ],
        "displays": [
            {"name": "DELL U2720Q", "manufacturer": "DEL", "serial_hash": salted_sha256(SALT, "F8KX123")},
            {"name": None, "manufacturer": "BOE", "serial_hash": None},
        ],
    }
    assert problems == []


def test_ordinary_laptop_with_a_corrupt_edid(tmp_path: Path) -> None:
    root = tree("laptop", tmp_path, {
        "card1-eDP-1": build_edid("BOE", serial_number=0),
        "card1-DP-1": build_edid("GSM", name="LG HDR 4K", checksum_ok=False),
    })
    facts, problems = collect(root)
    assert facts == {
        "usb": [
            {"vendor_id": "8087", "product_id": "0033", "manufacturer": None, "product": None,
             "interface_classes": ["bluetooth"]},
            {"vendor_id": "046d", "product_id": "c548", "manufacturer": "Logitech", "product": "USB Receiver",
             "interface_classes": ["hid"]},
            {"vendor_id": "04f2", "product_id": "b6dd", "manufacturer": "Chicony Electronics Co.,Ltd.",
             "product": "Integrated Camera", "interface_classes": ["video"]},
            {"vendor_id": "05e3", "product_id": "0626", "manufacturer": "GenesysLogic", "product": "USB3.1 Hub",
             "interface_classes": ["hub"]},
            ROOT_HUB_2,
            {**ROOT_HUB_2, "product_id": "0003"},
        ],
        "displays": [{"name": None, "manufacturer": "BOE", "serial_hash": None}],
    }
    assert problems == ["display card1-DP-1: EDID checksum mismatch: bytes sum to 1 mod 256, expected 0"]


def test_serial_hash_depends_on_the_salt(tmp_path: Path) -> None:
    root = tree("pikvm", tmp_path, {"card0-HDMI-A-1": build_edid("TSB", serial_text="CAFEBABE")})
    hashes = {HardwareProbe(ProbeContext(sys_root=root, salt=salt, platform="linux")).collect().displays[0].serial_hash
              for salt in ("a", "b")}
    assert len(hashes) == 2 and "CAFEBABE" not in str(hashes)


@pytest.mark.parametrize(
    ("triple", "name"),
    [
        pytest.param((0x03, 0x01, 0x01), "hid", id="keyboard"),
        pytest.param((0x08, 0x06, 0x50), "mass_storage", id="bulk-only-scsi"),
        pytest.param((0x02, 0x06, 0x00), "cdc_ethernet", id="ecm"),
        pytest.param((0x02, 0x02, 0x01), "cdc_acm", id="serial"),
        pytest.param((0xEF, 0x04, 0x01), "rndis", id="rndis-misc"),
        pytest.param((0xE0, 0x01, 0x01), "bluetooth", id="bluetooth"),
        pytest.param((0x0E, 0x01, 0x00), "video", id="uvc"),
        pytest.param((0x42, 0x00, 0x00), "class_42", id="unassigned"),
    ],
)
def test_interface_class_names(triple: tuple[int, int, int], name: str) -> None:
    assert interface_class_name(*triple) == name


def test_no_usb_bus_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    facts, problems = collect(tmp_path)
    assert facts == {"usb": [], "displays": []}
    assert problems == [f"no USB bus in {tmp_path}/bus/usb/devices (no USB controller visible)"]


def tool_output(name: str) -> str:
    return (HOST / name).read_text(encoding="utf-8")


def replay(outputs: dict[str, str]):
    """A RunCommand answering from the hand-written outputs, keyed by the command's last argument."""
    return lambda argv: outputs[argv[-1]]


PIKVM_USB = {"vendor_id": "1d6b", "product_id": "0104", "manufacturer": "PiKVM", "product": "PiKVM Composite Device"}


def test_macos_from_hand_written_system_profiler() -> None:
    run = replay({"SPUSBDataType": tool_output("macos-system_profiler-SPUSBDataType.json"),
                  "SPDisplaysDataType": tool_output("macos-system_profiler-SPDisplaysDataType.json")})
    probe = HardwareProbe(ProbeContext(platform="darwin", run=run, salt=SALT))
    assert to_wire(probe.collect()) == {
        "usb": [
            {**PIKVM_USB, "interface_classes": []},  # system_profiler lists no interfaces
            {"vendor_id": "05e3", "product_id": "0610", "manufacturer": "GenesysLogic", "product": "USB2.0 Hub",
             "interface_classes": []},
            {"vendor_id": "046d", "product_id": "c52b", "manufacturer": "Logitech", "product": "USB Receiver",
             "interface_classes": []},
        ],
        "displays": [
            {"name": "Color LCD", "manufacturer": "APP", "serial_hash": salted_sha256(SALT, "fd626d62")},
            {"name": "Toshiba-H2C", "manufacturer": "TSB", "serial_hash": salted_sha256(SALT, "1")},  # PiKVM's capture
            {"name": "Virtual 16:9", "manufacturer": None, "serial_hash": None},  # vendor 756e6b6e: "unkn"
        ],
    }
    assert probe.problems == []


def test_windows_from_hand_written_pnp_and_wmi() -> None:
    run = replay({
        WINDOWS_USB_SCRIPT: tool_output("windows-pnp-usb.json"),
        WINDOWS_MONITOR_SCRIPT: tool_output("windows-WmiMonitorID.json"),
    })
    probe = HardwareProbe(ProbeContext(platform="win32", run=run, salt=SALT))
    assert to_wire(probe.collect()) == {
        "usb": [
            {"vendor_id": "046d", "product_id": "c077", "manufacturer": None, "product": "USB Optical Mouse",
             "interface_classes": ["hid"]},
            {**PIKVM_USB, "manufacturer": None, "interface_classes": ["hid", "mass_storage"]},
        ],
        "displays": [{"name": "Toshiba-H2C", "manufacturer": "TSB", "serial_hash": salted_sha256(SALT, "1")}],
    }
    assert probe.problems == []


def test_unknown_platform_says_so() -> None:
    with pytest.raises(ProbeUnavailable, match="no hardware inventory for platform freebsd"):
        HardwareProbe(ProbeContext(platform="freebsd")).collect()
