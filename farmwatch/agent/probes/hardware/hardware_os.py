"""USB devices and displays from macOS and Windows tool output (Linux reads sysfs instead).

- macOS: ``system_profiler -json SPUSBDataType``: a tree of buses whose ``_items`` are devices
  with ``vendor_id`` ("0x1d6b" or "0x05ac  (Apple Inc.)"), ``product_id``, ``manufacturer`` and
  ``_name`` (the product string). It lists no interface classes. Displays from
  ``system_profiler -json SPDisplaysDataType`` (see :func:`parse_system_profiler_displays`).
- Windows: ``Get-PnpDevice`` rows for ``USB\\VID_xxxx&PID_yyyy[&MI_nn]\\...`` instance ids with
  their ``CompatibleIds`` (``USB\\Class_03&SubClass_01&Prot_01``: the interface class) and
  ``DEVPKEY_Device_BusReportedDeviceDesc`` (the device's own product string); Windows exposes
  no manufacturer string descriptor, so ``manufacturer`` stays null. Displays from
  ``root\\wmi`` ``WmiMonitorID`` (EDID fields as UTF-16 code arrays).
"""

from __future__ import annotations

import json
import re
from typing import Any

from farmwatch.agent.probes.salted import salted_sha256
from farmwatch.contract import Display, UsbDevice

from .edid import pnp_id
from .usb_sysfs import interface_class_name

WINDOWS_USB_SCRIPT = (
    "Get-PnpDevice -PresentOnly | Where-Object InstanceId -like 'USB\\VID_*' | ForEach-Object { "
    "[pscustomobject]@{ InstanceId = $_.InstanceId; "
    "CompatibleIds = (Get-PnpDeviceProperty -InstanceId $_.InstanceId -KeyName DEVPKEY_Device_CompatibleIds).Data; "
    "Product = (Get-PnpDeviceProperty -InstanceId $_.InstanceId -KeyName DEVPKEY_Device_BusReportedDeviceDesc).Data "
    "} } | ConvertTo-Json -Depth 3"
)
WINDOWS_MONITOR_SCRIPT = "Get-CimInstance -Namespace root\\wmi -ClassName WmiMonitorID | ConvertTo-Json -Depth 3"

_HEX_ID = re.compile(r"0x([0-9a-fA-F]{4})")
_INSTANCE = re.compile(r"^USB\\VID_([0-9A-F]{4})&PID_([0-9A-F]{4})(?:&MI_([0-9A-F]{2}))?\\(.*)$", re.I)
_COMPATIBLE = re.compile(r"USB\\Class_([0-9A-F]{2})&SubClass_([0-9A-F]{2})&Prot_([0-9A-F]{2})", re.I)


def _as_list(value: Any) -> list[Any]:
    """ConvertTo-Json writes one object bare and several as an array."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def parse_system_profiler_usb(output: str) -> list[UsbDevice]:
    """Every device in ``system_profiler SPUSBDataType -json``, depth first."""
    devices: list[UsbDevice] = []

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            vendor = _HEX_ID.match(str(item.get("vendor_id", "")))
            product = _HEX_ID.match(str(item.get("product_id", "")))
            if vendor and product:
                devices.append(UsbDevice(
                    vendor_id=vendor.group(1).lower(), product_id=product.group(1).lower(),
                    manufacturer=item.get("manufacturer") or None, product=item.get("_name") or None,
                    interface_classes=[],
                ))
            walk(item.get("_items", []))

    walk(json.loads(output).get("SPUSBDataType", []))
    return devices


def parse_system_profiler_displays(output: str, salt: str) -> list[Display]:
    """Displays from ``system_profiler -json SPDisplaysDataType``.

    Each graphics entry lists its displays under ``spdisplays_ndrvs``. macOS has decoded the EDID
    already: ``_name`` is the monitor name ("Color LCD" for a built-in panel),
    ``_spdisplays_display-vendor-id`` the PNP manufacturer id as hex of its packed 16 bits (610 is
    APP), the serial is ``_spdisplays_display-serial-number`` (older releases drop the leading
    underscore). Vendor id 756e6b6e (ASCII "unkn") marks a virtual display: no manufacturer.
    """
    displays = []
    for adapter in _as_list((json.loads(output) if output.strip() else {}).get("SPDisplaysDataType")):
        for screen in _as_list(adapter.get("spdisplays_ndrvs")):
            vendor = str(screen.get("_spdisplays_display-vendor-id") or "")
            manufacturer = pnp_id(int(vendor, 16)) if re.fullmatch(r"[0-9a-fA-F]{1,4}", vendor) else None
            serial = screen.get("_spdisplays_display-serial-number") or screen.get("spdisplays_display-serial-number")
            displays.append(Display(
                name=screen.get("_name") or None,
                manufacturer=manufacturer if manufacturer and manufacturer.isalpha() else None,
                serial_hash=salted_sha256(salt, str(serial)) if serial and str(serial) != "0" else None,
            ))
    return displays


def parse_windows_pnp_usb(output: str) -> list[UsbDevice]:
    """USB devices from :data:`WINDOWS_USB_SCRIPT`; a composite's ``MI_nn`` children are its interfaces."""
    parents: dict[tuple[str, str], dict[str, Any]] = {}
    classes: dict[tuple[str, str], list[str]] = {}
    for row in _as_list(json.loads(output) if output.strip() else None):
        match = _INSTANCE.match(str(row.get("InstanceId", "")))
        if not match:
            continue
        key = (match.group(1).lower(), match.group(2).lower())
        compatible = _COMPATIBLE.search(" ".join(str(c) for c in _as_list(row.get("CompatibleIds"))))
        if match.group(3) is None:
            parents.setdefault(key, row)
        if compatible:  # a composite parent has only USB\DevClass_00...: its interfaces say it
            cls, sub, proto = (int(part, 16) for part in compatible.groups())
            classes.setdefault(key, []).append(interface_class_name(cls, sub, proto))
    return [
        UsbDevice(vendor_id=vendor, product_id=product, manufacturer=None,
                  product=row.get("Product") or None,
                  interface_classes=list(dict.fromkeys(classes.get((vendor, product), []))))
        for (vendor, product), row in sorted(parents.items())
    ]


def _utf16_codes(codes: Any) -> str | None:
    """WmiMonitorID's arrays of character codes, zero-padded, as text."""
    text = "".join(chr(code) for code in _as_list(codes) if code).strip()
    return text or None


def parse_windows_monitors(output: str, salt: str) -> list[Display]:
    """Displays from :data:`WINDOWS_MONITOR_SCRIPT` (Windows decoded the EDID already)."""
    displays = []
    for row in _as_list(json.loads(output) if output.strip() else None):
        serial = _utf16_codes(row.get("SerialNumberID"))
        displays.append(Display(
            name=_utf16_codes(row.get("UserFriendlyName")),
            manufacturer=_utf16_codes(row.get("ManufacturerName")),
            serial_hash=salted_sha256(salt, serial) if serial and serial != "0" else None,
        ))
    return displays
