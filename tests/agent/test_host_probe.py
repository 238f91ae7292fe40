"""Host probe: parsers of every OS's tool outputs, and this machine's real values.

macOS and Windows cannot run here: their commands are replayed from outputs written by hand in
tests/fixtures/host/ (a fake of the OS only; the probe code runs unchanged).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pytest
from Xlib import Xatom
from Xlib.display import Display
from xserver import xtool, xvfb

from farmwatch.agent.probes.host import keyboards, timezones
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.host.probe import HostProbe, logged_in_user

HOST = Path(__file__).parents[1] / "fixtures" / "host"
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc).timestamp()  # northern summer: DST in force


def tool_output(name: str) -> str:
    return (HOST / name).read_text(encoding="utf-8")


def replay(outputs: dict[tuple[str, ...], str]):
    """A RunCommand answering from the hand-written outputs; an unknown command is not installed."""

    def run(argv: Sequence[str]) -> str:
        try:
            return outputs[tuple(argv)]
        except KeyError:
            raise FileNotFoundError(argv[0]) from None

    return run


# --- parsers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "zone"),
    [
        pytest.param(":Europe/Berlin", "Europe/Berlin", id="colon-name"),
        pytest.param("Asia/Seoul", "Asia/Seoul", id="name"),
        pytest.param(":/usr/share/zoneinfo/Asia/Seoul", "Asia/Seoul", id="path"),
        pytest.param("EST5EDT,M3.2.0,M11.1.0", None, id="posix-rule"),
        pytest.param("Not/AZone", None, id="unknown"),
        pytest.param("", None, id="empty"),
    ],
)
def test_tz_variable(value: str, zone: str | None) -> None:
    assert timezones.zone_from_tz_variable(value) == zone


@pytest.mark.parametrize(
    ("target", "zone"),
    [
        pytest.param("/usr/share/zoneinfo/America/Chicago", "America/Chicago", id="linux"),
        pytest.param("../usr/share/zoneinfo/Etc/UTC", "Etc/UTC", id="relative"),
        pytest.param("/var/db/timezone/zoneinfo/Asia/Pyongyang", "Asia/Pyongyang", id="macos"),
        pytest.param("/usr/share/zoneinfo/posix/Asia/Tokyo", "Asia/Tokyo", id="posix-dir"),
        pytest.param("/etc/static/localtime", None, id="no-zoneinfo"),
    ],
)
def test_zoneinfo_path(target: str, zone: str | None) -> None:
    assert timezones.zone_from_zoneinfo_path(target) == zone


def test_linux_zone_order(tmp_path: Path) -> None:
    (tmp_path / "timezone").write_text("Europe/Paris\n")
    assert timezones.linux_zone(None, tmp_path) == "Europe/Paris"
    (tmp_path / "localtime").symlink_to("/usr/share/zoneinfo/Asia/Seoul")
    assert timezones.linux_zone(None, tmp_path) == "Asia/Seoul"  # the link glibc reads wins
    assert timezones.linux_zone(":America/Denver", tmp_path) == "America/Denver"  # TZ wins over both


def test_windows_zone_mapping() -> None:
    assert timezones.parse_tzutil(tool_output("windows-tzutil-g.txt")) == "America/Phoenix"
    assert timezones.parse_tzutil("Korea Standard Time_dstoff\r\n") == "Asia/Seoul"
    assert timezones.parse_tzutil("Atlantis Standard Time") is None
    # Every mapped zone must be one this Python knows, or the offset could not be computed.
    assert all(timezones.is_iana_name(zone) for zone in timezones.windows_zones().values())
    assert len(timezones.windows_zones()) > 130


def test_offsets() -> None:
    assert timezones.utc_offset_minutes("America/Chicago", NOW) == -300  # CDT
    assert timezones.utc_offset_minutes("Asia/Kolkata", NOW) == 330
    assert timezones.utc_offset_minutes(None, NOW) is None


def test_linux_keyboard_parsers() -> None:
    assert keyboards.parse_setxkbmap(tool_output("setxkbmap-query.txt")) == ["us", "kr(kr104)"]
    assert keyboards.parse_localectl(tool_output("localectl-status.txt")) == ("en_US.UTF-8", ["us", "kr(kr104)"])
    assert keyboards.parse_default_keyboard(tool_output("default-keyboard")) == ["us", "kr(kr104)"]
    assert keyboards.parse_ibus_engines(tool_output("dconf-ibus-preload-engines.txt")) == ["hangul"]
    assert keyboards.parse_ibus_engines("anthy\n") == ["anthy"]
    assert keyboards.parse_fcitx5_profile(tool_output("fcitx5-profile")) == (["us"], ["pinyin"])


def test_console_keymap_when_no_x11_layout() -> None:
    assert keyboards.parse_localectl("   System Locale: LANG=de_DE.UTF-8\n       VC Keymap: de\n      X11 Layout: n/a\n") == (
        "de_DE.UTF-8",
        ["de"],
    )


def test_macos_input_sources() -> None:
    layouts, methods = keyboards.parse_macos_input_sources(tool_output("macos-AppleEnabledInputSources.txt"))
    assert layouts == ["U.S."]
    assert methods == ["com.apple.inputmethod.Korean.2SetKorean"]
    assert timezones.parse_systemsetup(tool_output("macos-systemsetup-gettimezone.txt")) == "America/Phoenix"


def test_windows_language_list() -> None:
    assert keyboards.parse_windows_language_list(tool_output("windows-Get-WinUserLanguageList.txt")) == (
        "en-US",
        ["00000409"],
        ["ko Korean IME {A028AE76-01B1-46C2-99C4-ACD9858AE02F}{B5FE1F02-D5F2-4445-9C03-C568F23C99A1}"],
    )
    assert keyboards.parse_reg_preload(tool_output("windows-reg-preload.txt")) == ["00000409", "00000412"]


@pytest.mark.parametrize(
    ("host", "remote"),
    [
        pytest.param("203.0.113.9", "203.0.113.9", id="ssh-peer"),
        pytest.param(":0", None, id="local-x-display"),
        pytest.param("", None, id="console"),
        pytest.param(None, None, id="none"),
        pytest.param("localhost:10.0", "localhost:10.0", id="x-forwarding"),
    ],
)
def test_logged_in_user_remote_host(host: str | None, remote: str | None) -> None:
    assert logged_in_user("ana", "pts/0", host).remote_host == remote


# --- the probe on each OS ----------------------------------------------------------------------


def test_probe_on_windows_from_hand_written_outputs(tmp_path: Path) -> None:
    run = replay({
        ("tzutil", "/g"): tool_output("windows-tzutil-g.txt"),
        ("powershell", "-NoProfile", "-Command", "Get-WinUserLanguageList"): tool_output("windows-Get-WinUserLanguageList.txt"),
        ("reg", "query", r"HKCU\Keyboard Layout\Preload"): tool_output("windows-reg-preload.txt"),
    })
    probe = HostProbe(ProbeContext(platform="win32", run=run, clock=lambda: NOW, etc_root=tmp_path))
    facts = probe.collect()
    assert (facts.timezone, facts.utc_offset_minutes, facts.locale) == ("America/Phoenix", -420, "en-US")
    assert facts.keyboard_layouts == ["00000409", "00000412"]
    assert facts.input_methods == [
        "ko Korean IME {A028AE76-01B1-46C2-99C4-ACD9858AE02F}{B5FE1F02-D5F2-4445-9C03-C568F23C99A1}"
    ]
    assert probe.problems == []


def test_probe_on_macos_from_hand_written_outputs(tmp_path: Path) -> None:
    (tmp_path / "localtime").symlink_to("/var/db/timezone/zoneinfo/Asia/Seoul")
    run = replay({
        ("defaults", "read", "-g", "AppleLocale"): "ko_KR\n",
        ("defaults", "read", "com.apple.HIToolbox", "AppleEnabledInputSources"): tool_output(
            "macos-AppleEnabledInputSources.txt"
        ),
    })
    facts = HostProbe(ProbeContext(platform="darwin", run=run, clock=lambda: NOW, etc_root=tmp_path)).collect()
    assert (facts.timezone, facts.utc_offset_minutes, facts.locale) == ("Asia/Seoul", 540, "ko_KR")
    assert (facts.keyboard_layouts, facts.input_methods) == (["U.S."], ["com.apple.inputmethod.Korean.2SetKorean"])


def test_probe_on_linux_from_hand_written_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Debian box without systemd: /etc files, dconf's ibus list and a user's fcitx5 profile."""
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LANG", raising=False)
    etc, home = tmp_path / "etc", tmp_path / "home" / "ana"
    (etc / "default").mkdir(parents=True)
    (home / ".config" / "fcitx5").mkdir(parents=True)
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/America/Chicago")
    (etc / "default" / "keyboard").write_text(tool_output("default-keyboard"))
    (etc / "default" / "locale").write_text('LANG="en_US.UTF-8"\n')
    (home / ".config" / "fcitx5" / "profile").write_text(tool_output("fcitx5-profile"))
    run = replay({
        ("dconf", "read", "/desktop/ibus/general/preload-engines"): tool_output("dconf-ibus-preload-engines.txt"),
    })
    context = ProbeContext(platform="linux", run=run, clock=lambda: NOW, etc_root=etc, options={"host": {"home_dirs": [str(home)]}})
    probe = HostProbe(context)
    facts = probe.collect()
    assert (facts.timezone, facts.utc_offset_minutes, facts.locale) == ("America/Chicago", -300, "en_US.UTF-8")
    assert facts.keyboard_layouts == ["us", "kr(kr104)"]
    assert facts.input_methods == ["hangul", "pinyin"]
    assert probe.problems == []


def test_localectl_is_asked_again_only_when_a_file_it_answers_from_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: starting localectl every window cost more than the rest of the collection."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LANG", raising=False)
    asked: list[str] = []
    answer = {"layout": "us"}

    def run(argv: Sequence[str]) -> str:
        if tuple(argv) != ("localectl", "status"):
            raise FileNotFoundError(argv[0])
        asked.append(answer["layout"])
        return f"   System Locale: LANG=en_US.UTF-8\n      X11 Layout: {answer['layout']}\n"

    (tmp_path / "locale.conf").write_text("LANG=en_US.UTF-8\n")
    probe = HostProbe(ProbeContext(platform="linux", run=run, etc_root=tmp_path, options={"host": {"home_dirs": []}}))
    assert [probe.collect().keyboard_layouts for _ in range(3)] == [["us"]] * 3
    assert asked == ["us"]
    answer["layout"] = "kr"  # localectl set-x11-keymap kr: localed writes its file
    (tmp_path / "X11" / "xorg.conf.d").mkdir(parents=True)
    (tmp_path / "X11" / "xorg.conf.d" / "00-keyboard.conf").write_text('Option "XkbLayout" "kr"\n')
    assert probe.collect().keyboard_layouts == ["kr"]
    os.utime(tmp_path / "locale.conf", ns=(0, 10**18))  # an edit of a file that was there
    probe.collect()
    assert asked == ["us", "kr", "kr"]


def test_probe_says_what_it_could_not_see(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    probe = HostProbe(ProbeContext(platform="linux", run=replay({}), etc_root=tmp_path, options={"host": {"home_dirs": []}}))
    facts = probe.collect()
    assert (facts.timezone, facts.utc_offset_minutes, facts.keyboard_layouts) == (None, None, [])
    assert probe.problems == [
        "time zone unknown: no IANA zone name found in the OS settings",
        "keyboard layout unknown: no layout source answered on this machine",
    ]


# --- this machine ------------------------------------------------------------------------------


def _real_zone() -> str:
    """This machine's zone, read independently of the probe: TZ, else the /etc/localtime link."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].removeprefix(":")
    return os.path.realpath("/etc/localtime").split("zoneinfo/", 1)[1]


def _real_locale() -> str | None:
    """The agent's own locale variables, else the system's LANG from /etc (no systemd here)."""
    if os.environ.get("LC_ALL") or os.environ.get("LANG"):
        return os.environ.get("LC_ALL") or os.environ.get("LANG")
    for path in ("/etc/locale.conf", "/etc/default/locale"):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                if line.startswith("LANG="):
                    return line.removeprefix("LANG=").strip().strip('"')
    return None


def _real_boot_time() -> datetime:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return datetime.fromtimestamp(int(line.split()[1]), tz=timezone.utc)
    raise AssertionError("no btime in /proc/stat")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="pins Linux values read from /proc and /etc")
def test_probe_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    facts = HostProbe(ProbeContext(platform="linux")).collect()
    zone = _real_zone()
    assert facts.timezone == zone
    now = datetime.now(timezone.utc)
    assert facts.utc_offset_minutes == int(now.astimezone(ZoneInfo(zone)).utcoffset().total_seconds() // 60)  # type: ignore[union-attr]
    assert facts.locale == _real_locale()
    assert facts.boot_time is not None and abs((facts.boot_time - _real_boot_time()).total_seconds()) <= 1
    assert [u.name for u in facts.users] == [u.name for u in psutil.users()]


@pytest.mark.slow
def test_probe_reads_the_x_session_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real X server announcing a US+Korean layout; the probe must report it via setxkbmap.

    Xvfb ignores keymap changes from setxkbmap, so the test sets the root-window property in
    which an X server announces its XKB configuration (what Xorg writes from xorg.conf and what
    ``setxkbmap -query`` reads), then checks the real ``setxkbmap`` sees it.
    """
    with xvfb() as display:
        connection = Display(display)
        root = connection.screen().root
        names = connection.intern_atom("_XKB_RULES_NAMES")
        root.change_property(names, Xatom.STRING, 8, b"evdev\0pc105\0us,kr\0,kr104\0\0")
        connection.sync()
        assert "layout:     us,kr" in xtool(display, "setxkbmap", "-query")
        connection.close()
        monkeypatch.setenv("DISPLAY", display)
        facts = HostProbe(ProbeContext(platform="linux", options={"host": {"home_dirs": []}})).collect()
    assert facts.keyboard_layouts[:2] == ["us", "kr(kr104)"]


def test_failed_command_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(argv: Sequence[str]) -> str:
        raise subprocess.CalledProcessError(1, list(argv))

    monkeypatch.setenv("DISPLAY", ":99")
    probe = HostProbe(ProbeContext(platform="linux", run=broken, etc_root=tmp_path, options={"host": {"home_dirs": []}}))
    probe.collect()
    assert probe.problems[0].startswith("setxkbmap failed: Command '['setxkbmap', '-query']' returned non-zero")


def test_a_bad_home_dirs_option_is_named_and_the_logged_in_users_homes_used(tmp_path: Path) -> None:
    probe = HostProbe(ProbeContext(platform="linux", run=replay({}), etc_root=tmp_path,
                                   options={"host": {"home_dirs": "/home/ana", "homes": ["/x"]}}))
    probe.collect()
    assert any(p.startswith("probe_options.host.home_dirs is '/home/ana'") and p.endswith("used None")
               for p in probe.problems), probe.problems
    assert any(p.startswith("probe_options.host.homes: not an option") for p in probe.problems), probe.problems
