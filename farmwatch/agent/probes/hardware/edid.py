"""EDID base-block parsing: who made a display, what it calls itself, its serial.

An IP-KVM presents itself to the laptop as a monitor (PiKVM's EDID names it "PiKVM V4 Plus",
older firmware "Toshiba-H2C"), so the monitor name is evidence. Layout per VESA E-EDID
(Enhanced Extended Display Identification Data Standard, release A rev. 2, 2006), section 3:
bytes 0-7 the fixed header, 8-9 the PNP manufacturer id (three 5-bit letters, 1 = 'A'), 10-11
the product code, 12-15 the numeric serial (little-endian), 54-125 four 18-byte descriptors,
127 a checksum making the 128-byte block sum to 0 mod 256. Display descriptors start with
three zero bytes; tag 0xFF holds the serial text, 0xFC the monitor name (text up to 13 bytes,
ended by 0x0A and padded with spaces).
"""

from __future__ import annotations

from dataclasses import dataclass

from farmwatch.errors import FarmwatchError

HEADER = bytes([0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00])
BLOCK = 128
DESCRIPTOR_OFFSETS = (54, 72, 90, 108)
TAG_SERIAL = 0xFF
TAG_NAME = 0xFC


class EdidError(FarmwatchError, ValueError):
    """The bytes are not a valid EDID base block; the message says which check failed."""


@dataclass(frozen=True)
class Edid:
    manufacturer: str  # PNP id, e.g. "DEL", "BOE"
    product_code: int
    name: str | None  # monitor name descriptor (0xFC)
    serial: str | None  # serial descriptor (0xFF) text, else the numeric serial; None if neither


def parse_edid(blob: bytes) -> Edid:
    """The identity in an EDID base block; raises :class:`EdidError` on a bad header or checksum."""
    if len(blob) < BLOCK:
        raise EdidError(f"EDID is {len(blob)} bytes, a base block needs {BLOCK}")
    block = blob[:BLOCK]
    if block[:8] != HEADER:
        raise EdidError(f"EDID header is {block[:8].hex()}, expected {HEADER.hex()}")
    if sum(block) % 256:
        raise EdidError(f"EDID checksum mismatch: bytes sum to {sum(block) % 256} mod 256, expected 0")
    manufacturer = pnp_id(int.from_bytes(block[8:10], "big"))
    texts = dict(_descriptor_texts(block))
    numeric_serial = int.from_bytes(block[12:16], "little")
    return Edid(
        manufacturer=manufacturer,
        product_code=int.from_bytes(block[10:12], "little"),
        name=texts.get(TAG_NAME),
        serial=texts.get(TAG_SERIAL) or (str(numeric_serial) if numeric_serial else None),
    )


def pnp_id(packed: int) -> str:
    """The three-letter PNP manufacturer id packed in 16 bits (three 5-bit letters, 1 = 'A')."""
    return "".join(chr(ord("A") - 1 + (packed >> shift & 0x1F)) for shift in (10, 5, 0))


def _descriptor_texts(block: bytes) -> list[tuple[int, str]]:
    """(tag, text) of the display descriptors that carry text."""
    found = []
    for offset in DESCRIPTOR_OFFSETS:
        descriptor = block[offset : offset + 18]
        if descriptor[:3] != b"\x00\x00\x00":  # a detailed timing, not a display descriptor
            continue
        text = descriptor[5:18].split(b"\x0a", 1)[0].decode("cp437").strip()
        if text:
            found.append((descriptor[3], text))
    return found
