"""deploy/README.md is true of the repository: its farmwatch commands parse with the real CLIs and
use only flags their --help names, its example config loads, its make target exists, and every
file or folder it names is there.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from farmwatch.agent.cli import build_parser as agent_parser
from farmwatch.agent.settings import load_file

REPO = Path(__file__).resolve().parents[2]
README = REPO / "deploy" / "README.md"
BIN = Path(sys.executable).parent
PARSERS = {"farmwatch-agent": agent_parser}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.DOTALL)


def _commands(program: str) -> list[list[str]]:
    """Every shell line of the README that runs ``program``, split like the shell would."""
    found = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words = words[1:]  # VAR=value prefixes
            if words and words[0] == program:
                found.append(words[1:])
    return found


@pytest.mark.parametrize("program", ["farmwatch-agent", "farmwatch-collector"])
def test_every_farmwatch_command_uses_flags_its_help_names(program: str) -> None:
    commands = _commands(program)
    assert commands, f"the README runs no {program}"
    for argv in commands:
        subcommand = [word for word in argv[:1] if not word.startswith("-")]
        shown = subprocess.run([str(BIN / program), *subcommand, "--help"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        for flag in (word.split("=", 1)[0] for word in argv if word.startswith("--")):
            assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", shown.stdout), f"{program} {' '.join(argv)}: {flag}"
        if program in PARSERS and "--help" not in argv:
            PARSERS[program]().parse_args(argv)


def test_the_example_agent_config_loads(tmp_path: Path) -> None:
    [example] = [block for block in _blocks("toml") if "[agent]" in block]
    (tmp_path / "agent.toml").write_text(example)
    table = load_file(tmp_path / "agent.toml")
    assert table["collector"].startswith("https://") and table["enroll_secret_file"] == "/etc/farmwatch/enroll-secret"


def test_make_package_and_the_build_commands_name_real_targets_and_files() -> None:
    assert ["make", "package"] in [shlex.split(line, comments=True) for block in _blocks("sh") for line in block.splitlines()]
    assert re.search(r"^package:", (REPO / "Makefile").read_text(), re.MULTILINE)
    text = README.read_text()
    for path in re.findall(r"(?:-f|-k|--file)\s+(deploy/\S+)", text):
        assert (REPO / path).exists(), path
    for path in re.findall(r"(deploy/agent/\S+?\.sh)\b", text):
        assert (REPO / path).exists(), path


def test_every_path_in_the_readme_exists() -> None:
    text = README.read_text()
    named = set(re.findall(r"`((?:collector|agent|prometheus)/[\w./-]+)`", text))
    named |= set(re.findall(r"`(deploy/[\w./-]+)`", text)) | set(re.findall(r"`(tests/deploy/[\w./-]+)`", text))
    assert len(named) > 20
    missing = [path for path in sorted(named)
               if not (REPO / path).exists() and not (REPO / "deploy" / path).exists()]
    assert missing == []
