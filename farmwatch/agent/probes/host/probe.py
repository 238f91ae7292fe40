"""Host facts: time zone and offset, locale, keyboard layouts, input methods, boot time, users.

Why security cares: an operator abroad leaves traces in the machine's settings (a foreign time
zone, a Korean IME, a second layout) and in who is logged in from where (``users[].remote_host``).
Each is weak alone (travellers, bilingual employees); the detectors weigh them.

Reads, per OS (commands run through ``ProbeContext.run``, files under ``etc_root``):
- Linux: ``TZ``, ``/etc/localtime`` link, ``/etc/timezone``; ``LC_ALL``/``LANG``, ``localectl
  status``, ``/etc/locale.conf``, ``/etc/default/locale``; ``setxkbmap -query`` when ``DISPLAY``
  is set, ``/etc/default/keyboard``; ibus (``ibus engine``, dconf ``preload-engines``) and the
  fcitx5 profile in logged-in users' homes (``probe_options.host.home_dirs`` overrides the homes).
- macOS: ``/etc/localtime`` link or ``systemsetup -gettimezone``; ``defaults read -g AppleLocale``;
  ``defaults read com.apple.HIToolbox AppleEnabledInputSources``.
- Windows: ``tzutil /g`` mapped to IANA via CLDR; ``Get-WinUserLanguageList``; the registry's
  ``Keyboard Layout\\Preload``. Run as a service, these see the service account's profile.
Boot time and users come from psutil (utmp on Unix, WTS on Windows).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import psutil

from farmwatch.agent.probes.base import Probe, ProbeContext, ProbeOptions
from farmwatch.contract import HostFacts, LoggedInUser

from . import keyboards, timezones

_LOCAL_DISPLAY = re.compile(r"^:\d+(\.\d+)?$")  # an X display on this machine, not a remote host
LOCALED_FILES = ("locale.conf", "vconsole.conf", "X11/xorg.conf.d/00-keyboard.conf", "default/locale",
                 "default/keyboard")
"""Under ``etc_root``: where systemd-localed reads what ``localectl status`` prints (locale.conf(5),
vconsole.conf(5), localectl(1); Debian's localed also reads /etc/default/locale and
/etc/default/keyboard). ``localectl`` is asked again only when one of them changed: starting it
every window cost more CPU than the rest of the agent's collection (issue 13)."""


class HostOptions(ProbeOptions):
    home_dirs: list[str] | None = None  # where to look for per-user input methods; None: logged-in users'


class HostProbe(Probe[HostFacts]):
    name = "host"
    section = "host"

    def __init__(self, context: ProbeContext) -> None:
        super().__init__(context)
        self._localectl: tuple[tuple[int | None, ...], str] | None = None  # (files' mtimes, its answer)

    def collect(self) -> HostFacts:
        platform = self.context.platform
        if platform == "darwin":
            zone, locale, layouts, methods = self._macos()
        elif platform == "win32":
            zone, locale, layouts, methods = self._windows()
        else:
            zone, locale, layouts, methods = self._linux()
        if zone is None:
            self.problem("time zone unknown: no IANA zone name found in the OS settings")
        if not layouts:
            self.problem("keyboard layout unknown: no layout source answered on this machine")
        return HostFacts(
            timezone=zone,
            utc_offset_minutes=timezones.utc_offset_minutes(zone, self.context.clock()),
            locale=locale,
            keyboard_layouts=layouts,
            input_methods=methods,
            boot_time=datetime.fromtimestamp(psutil.boot_time(), tz=timezone.utc),
            users=[logged_in_user(u.name, u.terminal, u.host) for u in psutil.users()],
        )

    def _output(self, argv: Sequence[str], quiet: bool = False) -> str | None:
        """A command's stdout, or None; a failure is a problem unless ``quiet`` (optional tools)."""
        try:
            return self.context.run(argv)
        except (OSError, subprocess.SubprocessError) as error:
            if not quiet and not isinstance(error, FileNotFoundError):
                self.problem(f"{argv[0]} failed: {error}")
            return None

    def _read(self, path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def _linux(self) -> tuple[str | None, str | None, list[str], list[str]]:
        etc = self.context.etc_root
        zone = timezones.linux_zone(os.environ.get("TZ"), etc)
        localectl = self._localectl_status()
        system_locale, localectl_layouts = keyboards.parse_localectl(localectl)
        locale = os.environ.get("LC_ALL") or os.environ.get("LANG") or system_locale
        for name in ("locale.conf", "default/locale"):
            text = self._read(etc / name)
            if not locale and text:
                locale = keyboards.parse_shell_assignments(text).get("LANG")
        layouts: list[str] = []
        if os.environ.get("DISPLAY"):
            layouts += keyboards.parse_setxkbmap(self._output(["setxkbmap", "-query"]) or "")
        layouts += localectl_layouts
        layouts += keyboards.parse_default_keyboard(self._read(etc / "default/keyboard") or "")
        methods = keyboards.parse_ibus_engines(self._output(["ibus", "engine"], quiet=True) or "")
        preload = self._output(["dconf", "read", "/desktop/ibus/general/preload-engines"], quiet=True)
        methods += keyboards.parse_ibus_engines(preload or "")
        for home in self._homes():
            profile = self._read(home / ".config/fcitx5/profile")
            if profile:
                fcitx_layouts, fcitx_methods = keyboards.parse_fcitx5_profile(profile)
                layouts += fcitx_layouts
                methods += fcitx_methods
        return zone, locale, keyboards.unique(layouts), keyboards.unique(methods)

    def _localectl_status(self) -> str:
        """``localectl status``, run again only when a file it answers from has changed (:data:`LOCALED_FILES`)."""
        stamps = tuple(_mtime_ns(self.context.etc_root / name) for name in LOCALED_FILES)
        if self._localectl is None or self._localectl[0] != stamps:
            self._localectl = (stamps, self._output(["localectl", "status"], quiet=True) or "")
        return self._localectl[1]

    def _homes(self) -> list[Path]:
        """Home folders of the users logged in now (fcitx5 keeps its profile per user)."""
        home_dirs = self.read_options(HostOptions).home_dirs
        if home_dirs is not None:
            return [Path(home) for home in home_dirs]
        import pwd  # Unix only; this runs on Linux

        homes: list[Path] = []
        for name in {user.name for user in psutil.users()}:
            try:
                homes.append(Path(pwd.getpwnam(name).pw_dir))
            except KeyError:
                continue
        return sorted(homes)

    def _macos(self) -> tuple[str | None, str | None, list[str], list[str]]:
        localtime = self.context.etc_root / "localtime"
        zone = timezones.zone_from_zoneinfo_path(str(localtime.readlink())) if localtime.is_symlink() else None
        if zone is None:
            zone = timezones.parse_systemsetup(self._output(["systemsetup", "-gettimezone"]) or "")
        locale = (self._output(["defaults", "read", "-g", "AppleLocale"]) or "").strip() or None
        sources = self._output(["defaults", "read", "com.apple.HIToolbox", "AppleEnabledInputSources"])
        layouts, methods = keyboards.parse_macos_input_sources(sources or "")
        return zone, locale, layouts, methods

    def _windows(self) -> tuple[str | None, str | None, list[str], list[str]]:
        zone = timezones.parse_tzutil(self._output(["tzutil", "/g"]) or "")
        languages = self._output(["powershell", "-NoProfile", "-Command", "Get-WinUserLanguageList"])
        locale, layouts, methods = keyboards.parse_windows_language_list(languages or "")
        preload = self._output(["reg", "query", r"HKCU\Keyboard Layout\Preload"])
        layouts = keyboards.unique(layouts + keyboards.parse_reg_preload(preload or ""))
        return zone, locale, layouts, methods


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def logged_in_user(name: str, terminal: str | None, host: str | None) -> LoggedInUser:
    """A psutil user row; an empty host or a local X display (``:0``) means no remote host."""
    remote = host if host and not _LOCAL_DISPLAY.match(host) else None
    return LoggedInUser(name=name, terminal=terminal or None, remote_host=remote)
