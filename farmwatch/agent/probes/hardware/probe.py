"""Hardware facts: USB devices with their interface classes, and displays from their EDID.

Why security cares: farms moved from remote-access software to IP-KVMs (PiKVM, TinyPilot,
JetKVM, NanoKVM), which the laptop sees as a USB keyboard/mouse/storage gadget and an HDMI
"monitor" (MITRE ATT&CK T1200, T1219.003). This probe reports facts only; the catalogue of KVM
identities lives with the detectors.

Linux: ``<sys_root>/bus/usb/devices`` (see :mod:`farmwatch.agent.probes.hardware.usb_sysfs`) and
``<sys_root>/class/drm/*/edid`` (see :mod:`farmwatch.agent.probes.hardware.edid`). macOS: ``system_profiler``
for USB and displays. Windows: PnP devices and WMI monitor ids through PowerShell (see
:mod:`farmwatch.agent.probes.hardware.hardware_os`). A display serial leaves the machine
only as a salted SHA-256.
"""

from __future__ import annotations

from pathlib import Path

from farmwatch.agent.probes.base import Probe, ProbeUnavailable
from farmwatch.agent.probes.salted import salted_sha256
from farmwatch.contract import Display, HardwareFacts

from . import hardware_os
from .edid import EdidError, parse_edid
from .usb_sysfs import read_usb_devices


class HardwareProbe(Probe[HardwareFacts]):
    name = "hardware"
    section = "hardware"

    def collect(self) -> HardwareFacts:
        platform = self.context.platform
        if platform == "darwin":
            usb = hardware_os.parse_system_profiler_usb(self.context.run(["system_profiler", "-json", "SPUSBDataType"]))
            screens = self.context.run(["system_profiler", "-json", "SPDisplaysDataType"])
            return HardwareFacts(usb=usb, displays=hardware_os.parse_system_profiler_displays(screens, self.context.salt))
        if platform == "win32":
            usb = hardware_os.parse_windows_pnp_usb(self._powershell(hardware_os.WINDOWS_USB_SCRIPT))
            monitors = self._powershell(hardware_os.WINDOWS_MONITOR_SCRIPT)
            return HardwareFacts(usb=usb, displays=hardware_os.parse_windows_monitors(monitors, self.context.salt))
        if platform != "linux":
            raise ProbeUnavailable(f"no hardware inventory for platform {platform}")
        sys_root = self.context.sys_root
        if not (sys_root / "bus" / "usb" / "devices").is_dir():
            self.problem(f"no USB bus in {sys_root}/bus/usb/devices (no USB controller visible)")
        return HardwareFacts(usb=read_usb_devices(sys_root), displays=self._displays(sys_root))

    def _powershell(self, script: str) -> str:
        return self.context.run(["powershell", "-NoProfile", "-NonInteractive", "-Command", script])

    def _displays(self, sys_root: Path) -> list[Display]:
        """Connected displays: every DRM connector whose ``edid`` file holds bytes."""
        displays = []
        for edid_path in sorted((sys_root / "class" / "drm").glob("*/edid")):
            connector = edid_path.parent.name
            try:
                blob = edid_path.read_bytes()
            except OSError as error:
                self.problem(f"display {connector}: EDID unreadable: {error.strerror}")
                continue
            if not blob:  # nothing plugged into this connector
                continue
            try:
                edid = parse_edid(blob)
            except EdidError as error:
                self.problem(f"display {connector}: {error}")
                continue
            serial_hash = salted_sha256(self.context.salt, edid.serial) if edid.serial else None
            displays.append(Display(name=edid.name, manufacturer=edid.manufacturer, serial_hash=serial_hash))
        return displays
