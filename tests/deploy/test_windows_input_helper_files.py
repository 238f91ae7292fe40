"""The Windows input helper's deployment, which cannot run here, agrees with the agent and with itself.

The sign-in Scheduled Task parses as XML and starts the windowless executable freeze.sh builds,
with a command line the agent's own parser takes; the service (WinSW) listens on the pipe the task's
helper sends to; install.ps1/uninstall.ps1 register and remove that task; the release workflow
ships every file; the Windows test workflow runs the pipe round trip that lives in
tests/agent/test_input_helper_pipe.py (it needs pywin32 and Windows: skipped here). On this
machine the pipe transport is chosen for ``win32`` and refuses with the reason, since pywin32 is
not here.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import yaml

from farmwatch.agent.cli import build_parser
from farmwatch.agent.errors import UsageError
from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.input.helper_pipe import DEFAULT_PIPE
from farmwatch.agent.probes.input.probe import InputTimingProbe
from farmwatch.agent.settings import _helper_group, helper_socket_path

REPO = Path(__file__).resolve().parents[2]
WINDOWS = REPO / "deploy" / "agent" / "windows"
TASK_XML = WINDOWS / "farmwatch-agent-input-helper.xml"
NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
USERS_GROUP_SID = "S-1-5-32-545"  # BUILTIN\Users, a well-known SID (Microsoft, "Well-known SIDs")


def windows_argv(command_line: str) -> list[str]:
    """Split a Windows command line that has no escaped quote (\\"), where a backslash is an ordinary
    character and double quotes group (CommandLineToArgvW's rules for such lines)."""
    assert '\\"' not in command_line, "a \\\" needs the full CommandLineToArgvW rules"
    return [token[1:-1] if len(token) > 1 and token[0] == token[-1] == '"' else token
            for token in shlex.split(command_line, posix=False)]


def _task() -> ElementTree.Element:
    return ElementTree.parse(TASK_XML).getroot()


def _service_args() -> list[str]:
    return windows_argv(ElementTree.parse(WINDOWS / "farmwatch-agent.xml").getroot().findtext("arguments") or "")


def test_the_task_starts_the_windowless_helper_at_every_users_sign_in_as_that_user() -> None:
    task = _task()
    assert task.tag == f"{{{NS['t']}}}Task"
    [trigger] = task.findall("t:Triggers/*", NS)
    assert trigger.tag.endswith("LogonTrigger") and trigger.find("t:UserId", NS) is None  # anyone's sign-in
    [principal] = task.findall("t:Principals/t:Principal", NS)
    assert principal.findtext("t:GroupId", namespaces=NS) == USERS_GROUP_SID
    assert principal.findtext("t:RunLevel", namespaces=NS) == "LeastPrivilege"
    assert principal.find("t:UserId", NS) is None  # never one account for everybody
    actions = task.find("t:Actions", NS)
    assert actions is not None and actions.get("Context") == principal.get("id")
    assert task.findtext("t:Settings/t:MultipleInstancesPolicy", namespaces=NS) == "Parallel"  # one per session
    assert task.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=NS) == "PT0S"  # no 72 h default limit


def test_the_tasks_command_is_the_frozen_helper_and_its_arguments_are_the_agents_own() -> None:
    [command] = windows_argv(_task().findtext("t:Actions/t:Exec/t:Command", namespaces=NS) or "")
    install = (WINDOWS / "install.ps1").read_text()
    target = re.search(r"^\$target = '([^']+)'$", install, re.MULTILINE)
    assert target is not None
    folder, exe = command.rsplit("\\", 2)[1:]
    assert command == f"{target.group(1)}\\{folder}\\{exe}"
    assert (folder, exe) == ("farmwatch-agent-helper", "farmwatch-agent-helper.exe")
    assert "freeze farmwatch-agent-helper --noconsole" in (REPO / "deploy" / "agent" / "freeze.sh").read_text()
    assert "(Join-Path $PSScriptRoot 'farmwatch-agent-helper')" in install  # install.ps1 copies that folder

    arguments = windows_argv(_task().findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) or "")
    args = build_parser().parse_args(arguments)
    assert args.command == "input-helper"
    assert str(helper_socket_path(str(args.socket), platform="win32")) == DEFAULT_PIPE


def test_the_service_listens_on_the_pipe_the_helpers_send_to() -> None:
    service = build_parser().parse_args(_service_args())
    helper = build_parser().parse_args(windows_argv(_task().findtext("t:Actions/t:Exec/t:Arguments",
                                                                      namespaces=NS) or ""))
    assert service.command == "run" and service.input_helper_socket == str(helper.socket) == DEFAULT_PIPE
    assert service.input_helper_group is None  # refused on Windows, see below


def test_install_registers_the_task_and_uninstall_removes_it() -> None:
    install, uninstall = (WINDOWS / "install.ps1").read_text(), (WINDOWS / "uninstall.ps1").read_text()
    name = (_task().findtext("t:RegistrationInfo/t:URI", namespaces=NS) or "").lstrip("\\")
    assert f"$task = '{name}'" in install and f"$task = '{name}'" in uninstall
    assert f"(Join-Path $PSScriptRoot '{TASK_XML.name}')" in install
    assert "Register-ScheduledTask -TaskName $task -Xml" in install and "Start-ScheduledTask -TaskName $task" in install
    assert "Stop-ScheduledTask -TaskName $task" in uninstall
    assert "Unregister-ScheduledTask -TaskName $task -Confirm:$false" in uninstall


def test_the_release_workflow_ships_the_helper_and_its_task() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "agent-release.yml").read_text())
    steps = "\n".join(step.get("run", "") for step in workflow["jobs"]["windows-intune"]["steps"])
    assert "build/agent/dist/farmwatch-agent-helper" in steps
    assert f"deploy/agent/windows/{TASK_XML.name}" in steps


def test_the_windows_test_workflow_runs_the_pipe_round_trip() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "windows-agent-tests.yml").read_text())
    [job] = workflow["jobs"].values()
    assert job["runs-on"].startswith("windows-")
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    tests = re.findall(r"(tests/[\w/]+\.py)", runs)
    assert "tests/agent/test_input_helper_pipe.py" in tests
    for test in tests:
        assert (REPO / test).is_file(), test
    assert '".[agent]"' in runs  # pywin32 comes with the agent extra on Windows


@pytest.mark.parametrize("name", ["C:\\farmwatch\\input", "\\\\.\\pipe\\", "\\\\.\\pipe\\a\\b",
                                  "\\\\server\\pipe\\farmwatch", "\\\\.\\pipe\\" + "x" * 250])
def test_a_windows_input_helper_socket_must_be_a_local_pipe_name(name: str) -> None:
    with pytest.raises(UsageError, match="local named pipe"):
        helper_socket_path(name, platform="win32")


def test_input_helper_group_is_refused_on_windows() -> None:
    with pytest.raises(UsageError, match="input_helper_group is for the Unix socket"):
        _helper_group("Users", Path(DEFAULT_PIPE), platform="win32")


def test_on_windows_the_probe_takes_the_pipe_and_says_why_it_cannot_here() -> None:
    probe = InputTimingProbe(ProbeContext(platform="win32", input_helper_socket=Path(DEFAULT_PIPE)))
    probe.start()
    try:
        with pytest.raises(ProbeUnavailable, match=r"cannot listen for input helpers on .*pipe.*pywin32"):
            probe.collect()
    finally:
        probe.stop()
