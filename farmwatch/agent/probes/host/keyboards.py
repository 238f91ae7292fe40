"""Keyboard layouts, input methods and locale, parsed from what each OS prints.

Operators type in their own language: a Korean IME or a second layout on a US employee's laptop
is a (weak, bilingual people exist) signal. Every parser takes the text an OS tool prints, so
tests replay recorded outputs; the host probe decides which tools to run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable


def unique(items: Iterable[str]) -> list[str]:
    """Non-empty items in first-seen order, without repeats."""
    seen: dict[str, None] = {}
    for item in items:
        if item:
            seen.setdefault(item, None)
    return list(seen)


def xkb_layouts(layouts: str, variants: str = "") -> list[str]:
    """XKB's comma lists (``"us,kr"``, ``",kr104"``) as ``["us", "kr(kr104)"]``."""
    names = layouts.split(",") if layouts else []
    kinds = variants.split(",") if variants else []
    kinds += [""] * (len(names) - len(kinds))
    return unique(f"{n.strip()}({v.strip()})" if v.strip() else n.strip() for n, v in zip(names, kinds))


def _colon_fields(output: str) -> dict[str, str]:
    """``key: value`` lines (``setxkbmap -query``, ``localectl status``), keys stripped."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_setxkbmap(output: str) -> list[str]:
    """X11 ``setxkbmap -query``: the layouts the running X session uses."""
    fields = _colon_fields(output)
    return xkb_layouts(fields.get("layout", ""), fields.get("variant", ""))


def parse_localectl(output: str) -> tuple[str | None, list[str]]:
    """systemd ``localectl status``: (system ``LANG``, X11 layouts or else the console keymap)."""
    fields = {key: value for key, value in _colon_fields(output).items() if value != "n/a"}  # n/a: unset
    locale = None
    for assignment in fields.get("System Locale", "").split():
        name, _, value = assignment.partition("=")
        if name == "LANG":
            locale = value
    layouts = xkb_layouts(fields.get("X11 Layout", ""), fields.get("X11 Variant", ""))
    keymap = fields.get("VC Keymap", "")
    if not layouts and keymap:
        layouts = [keymap]
    return locale, layouts


def parse_shell_assignments(text: str) -> dict[str, str]:
    """``NAME="value"`` lines of ``/etc/default/keyboard`` or ``/etc/default/locale``."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        values[name.strip()] = words[0] if words else ""
    return values


def parse_default_keyboard(text: str) -> list[str]:
    """Debian ``/etc/default/keyboard``: ``XKBLAYOUT="us,kr"``, ``XKBVARIANT=",kr104"``."""
    values = parse_shell_assignments(text)
    return xkb_layouts(values.get("XKBLAYOUT", ""), values.get("XKBVARIANT", ""))


def parse_ibus_engines(output: str) -> list[str]:
    """ibus engines from ``ibus engine`` (one name) or a dconf/gsettings list of names.

    ``xkb:us::eng`` entries are plain layouts, not input methods, and are left out.
    """
    names = re.findall(r"'([^']+)'", output) or output.split()
    return unique(name for name in names if not name.startswith("xkb:"))


def parse_fcitx5_profile(text: str) -> tuple[list[str], list[str]]:
    """fcitx5 ``~/.config/fcitx5/profile``: (layouts, input methods) of every group.

    Items named ``keyboard-<layout>`` are layouts; any other item (``pinyin``, ``hangul``,
    ``mozc``) is an input method.
    """
    import configparser  # only where fcitx5 is set up: ~0.2 MB of resident memory every other agent keeps (issue 13)

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    layouts: list[str] = []
    methods: list[str] = []
    for section in parser.sections():
        if "/Items/" not in section:
            continue
        name = parser.get(section, "Name", fallback="")
        if name.startswith("keyboard-"):
            layouts.append(name.removeprefix("keyboard-"))
        else:
            methods.append(name)
    return unique(layouts), unique(methods)


def parse_macos_input_sources(output: str) -> tuple[list[str], list[str]]:
    """macOS ``defaults read com.apple.HIToolbox AppleEnabledInputSources`` (old-style plist).

    Returns (layout names, input methods): ``Input Mode`` ids, or the ``Bundle ID`` of an input
    method enabled without modes. Palettes and press-and-hold helpers are not keyboards.
    """
    layouts: list[str] = []
    methods: list[str] = []
    moded_bundles: set[str] = set()
    bundles: list[str] = []
    for block in re.findall(r"\{(.*?)\}", output, flags=re.S):
        entry = dict(re.findall(r'"?([^"=;\n]+?)"?\s*=\s*"?([^";\n]*)"?;', block))
        entry = {key.strip(): value.strip() for key, value in entry.items()}
        kind = entry.get("InputSourceKind", "")
        if kind == "Keyboard Layout":
            layouts.append(entry.get("KeyboardLayout Name", ""))
        elif kind == "Input Mode":
            methods.append(entry.get("Input Mode", ""))
            moded_bundles.add(entry.get("Bundle ID", ""))
        elif kind == "Keyboard Input Method":
            bundles.append(entry.get("Bundle ID", ""))
    methods += [bundle for bundle in bundles if bundle not in moded_bundles]
    return unique(layouts), unique(methods)


def parse_windows_language_list(output: str) -> tuple[str | None, list[str], list[str]]:
    """PowerShell ``Get-WinUserLanguageList`` (its default list format).

    Returns (first language tag, keyboard layout ids, input methods). ``InputMethodTips`` hold
    ``LANGID:KLID`` for layouts (``0409:00000409``) and ``LANGID:{CLSID}{PROFILE}`` for text
    services (IMEs), reported as ``<LanguageTag> <EnglishName> IME {CLSID}{PROFILE}``.
    """
    first_tag: str | None = None
    layouts: list[str] = []
    methods: list[str] = []
    for record in re.split(r"\n\s*\n", output.replace("\r\n", "\n").strip()):
        fields = _colon_fields(record)
        tag = fields.get("LanguageTag")
        if not tag:
            continue
        first_tag = first_tag or tag
        for tip in re.findall(r"[0-9A-Fa-f]{4}:(\{[^:,}]+\}\{[^:,}]+\}|[0-9A-Fa-f]{8})", fields.get("InputMethodTips", "")):
            if tip.startswith("{"):
                methods.append(f"{tag} {fields.get('EnglishName', '')} IME {tip.upper()}")
            else:
                layouts.append(tip.upper())
    return first_tag, unique(layouts), unique(methods)


def parse_reg_preload(output: str) -> list[str]:
    """``reg query "HKCU\\Keyboard Layout\\Preload"``: the layout ids (KLIDs) in order."""
    rows = re.findall(r"^\s*(\d+)\s+REG_SZ\s+([0-9A-Fa-f]{8})\s*$", output, flags=re.M)
    return unique(klid.upper() for _, klid in sorted(rows, key=lambda row: int(row[0])))
