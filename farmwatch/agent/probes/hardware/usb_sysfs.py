"""USB devices as Linux sysfs shows them, with their interfaces' classes by name.

An IP-KVM is a USB gadget: one composite device exposing a keyboard and mouse (HID), often a
mass-storage drive (virtual CD/USB stick) and sometimes a network interface. Reads
``<sys_root>/bus/usb/devices/<dev>/{idVendor,idProduct,manufacturer,product}`` and each
interface's ``<dev>/*/bInterface{Class,SubClass,Protocol}`` (``1-1:1.0``; root hubs ``1-0:1.0``).

Class names follow usb.org "Defined Class Codes" (https://www.usb.org/defined-class-codes);
communications (0x02) subclasses follow the USB CDC 1.2 specification, table 4.
"""

from __future__ import annotations

from pathlib import Path

from farmwatch.contract import UsbDevice

CLASS_NAMES = {
    0x01: "audio",
    0x02: "cdc",
    0x03: "hid",
    0x05: "physical",
    0x06: "image",
    0x07: "printer",
    0x08: "mass_storage",
    0x09: "hub",
    0x0A: "cdc_data",
    0x0B: "smart_card",
    0x0D: "content_security",
    0x0E: "video",
    0x0F: "personal_healthcare",
    0x10: "audio_video",
    0x11: "billboard",
    0x12: "usb_c_bridge",
    0x13: "bulk_display",
    0x14: "mctp",
    0x3C: "i3c",
    0xDC: "diagnostic",
    0xE0: "wireless_controller",
    0xEF: "miscellaneous",
    0xFE: "application_specific",
    0xFF: "vendor_specific",
}
CDC_SUBCLASSES = {0x02: "cdc_acm", 0x06: "cdc_ethernet", 0x0C: "cdc_eem", 0x0D: "cdc_ncm", 0x0E: "cdc_mbim"}
# (class, subclass, protocol) triples that name a well-known function more precisely.
FUNCTIONS = {
    (0xE0, 0x01, 0x01): "bluetooth",
    (0xE0, 0x01, 0x03): "rndis",  # Remote NDIS (network), as Windows and Linux gadgets expose it
    (0xEF, 0x04, 0x01): "rndis",
}


def interface_class_name(cls: int, subclass: int, protocol: int) -> str:
    """The name of an interface's class, e.g. ``hid``, ``mass_storage``, ``cdc_ethernet``."""
    if (cls, subclass, protocol) in FUNCTIONS:
        return FUNCTIONS[(cls, subclass, protocol)]
    if cls == 0x02 and subclass in CDC_SUBCLASSES:
        return CDC_SUBCLASSES[subclass]
    return CLASS_NAMES.get(cls, f"class_{cls:02x}")


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _hex(path: Path) -> int:
    return int(_text(path) or "0", 16)


def read_usb_devices(sys_root: Path) -> list[UsbDevice]:
    """Every USB device (not interface) under ``sys_root/bus/usb/devices``, in sysfs name order."""
    devices = []
    for entry in sorted((sys_root / "bus" / "usb" / "devices").glob("*")):
        vendor, product_id = _text(entry / "idVendor"), _text(entry / "idProduct")
        if ":" in entry.name or vendor is None or product_id is None:  # an interface, not a device
            continue
        classes = []
        for interface in sorted(path.parent for path in entry.glob("*/bInterfaceClass")):
            classes.append(interface_class_name(
                _hex(interface / "bInterfaceClass"),
                _hex(interface / "bInterfaceSubClass"),
                _hex(interface / "bInterfaceProtocol"),
            ))
        devices.append(UsbDevice(
            vendor_id=vendor.lower(),
            product_id=product_id.lower(),
            manufacturer=_text(entry / "manufacturer"),
            product=_text(entry / "product"),
            interface_classes=list(dict.fromkeys(classes)),
        ))
    return devices
