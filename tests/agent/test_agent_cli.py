"""The ``farmwatch-agent`` command line: help, one-line errors, config file, verify, one agent per state dir."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from agent_procs import BIN, NamedProcess, run_agent
from collector_process import RunningCollector

from farmwatch.contract import Report


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [pytest.param([], ["once", "run", "verify", "input-helper", "spool"], id="top"),
     pytest.param(["once"], ["--print", "--window", "--collector", "--enroll-secret-file", "--state-dir"], id="once"),
     pytest.param(["run"], ["--interval", "--collector", "SIGTERM"], id="run"),
     pytest.param(["verify"], ["--seconds", "clear", "review", "farm"], id="verify"),
     pytest.param(["input-helper"], ["--socket", "--flush-seconds", "input_helper_socket", "never keys"],
                  id="input-helper")],
)
def test_every_command_explains_itself(argv: list[str], mentions: list[str]) -> None:
    done = run_agent(*argv, "--help")
    assert done.returncode == 0
    for word in mentions:
        assert word in done.stdout, word


@pytest.mark.parametrize(
    ("argv", "exit_code", "says"),
    [pytest.param(["once", "--window", "0"], 64, "--collector URL is required", id="no-collector"),
     pytest.param(["once", "--collector", "ftp://x", "--enroll-secret-file", "/dev/null"], 64,
                  "http:// or https://", id="bad-url"),
     pytest.param(["once", "--collector", "https://", "--enroll-secret-file", "/dev/null"], 64,
                  "URL with a host", id="url-without-host"),
     pytest.param(["once", "--collector", "http://127.0.0.1:1"], 64, "--enroll-secret-file is required",
                  id="no-secret"),
     pytest.param(["once", "--collector", "http://127.0.0.1:1", "--enroll-secret-file", "/no/such/file"], 64,
                  "cannot read the enrol secret file /no/such/file", id="missing-secret-file"),
     pytest.param(["once", "--collector", "http://127.0.0.1:1", "--enroll-secret-file", "/dev/null"], 64,
                  "is empty", id="empty-secret-file"),
     pytest.param(["once", "--collector", "http://127.0.0.1:1", "--enroll-secret-file", "/etc/hostname",
                   "--state-dir", "/dev/null/state"], 64, "cannot use the state dir /dev/null/state",
                  id="unusable-state-dir")],
)
def test_bad_input_is_one_line_and_a_usage_exit_code(argv: list[str], exit_code: int, says: str, tmp_path: Path) -> None:
    if "--state-dir" not in argv:
        argv = [*argv, "--state-dir", str(tmp_path / "state")]
    done = run_agent(*argv)
    assert done.returncode == exit_code
    assert says in one_line_error(done)


def test_a_negative_window_is_refused_by_the_parser() -> None:
    done = run_agent("once", "--print", "--window", "-1")
    assert done.returncode == 2 and "must be >= 0" in done.stderr


@pytest.mark.parametrize(
    ("config", "says"),
    [pytest.param("[agent]\nsalt = 5\n", "[agent].salt has the wrong type", id="wrong-type"),
     pytest.param("[agent]\ncolour = 'red'\n", "unknown key [agent].colour", id="unknown-key"),
     pytest.param("[agent]\nprobes = ['nope']\n", "unknown probes: nope", id="unknown-probe"),
     pytest.param("[agent\n", "not valid TOML", id="bad-toml")],
)
def test_a_bad_config_file_is_named_in_one_line(config: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(config)
    done = run_agent("once", "--print", "--window", "0", "--config", str(path))
    assert done.returncode == 64
    line = one_line_error(done)
    assert str(path) in line and says in line


def test_the_config_file_chooses_the_probes(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nprobes = ["remote_access"]\nsalt = "s"\n')
    done = run_agent("once", "--print", "--window", "0", "--config", str(path))
    assert done.returncode == 0, done.stderr
    report = Report.model_validate_json(done.stdout)
    assert report.remote_access is not None
    assert report.host is None and report.network is None and report.errors == []


@pytest.mark.slow
def test_verify_prints_the_verdict_and_exits_with_its_code(collector: RunningCollector, tmp_path: Path) -> None:
    anydesk = NamedProcess(tmp_path / "bin", "AnyDesk")
    try:
        done = run_agent("verify", "--collector", collector.url, "--enroll-secret-file",
                         str(collector.enroll_secret_file), "--state-dir", str(tmp_path / "state"), "--seconds", "0")
    finally:
        anydesk.close()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("farmwatch onboarding check: observing this laptop"), done.stdout + done.stderr
    first = next((line for line in lines if line.startswith("verdict: ")), "")
    assert first, done.stdout + done.stderr
    label = first.split()[1]
    assert done.returncode == {"clear": 0, "review": 2, "farm": 1}[label]
    assert label != "clear" and "AnyDesk" in done.stdout


@pytest.mark.slow
def test_a_second_agent_on_the_same_state_dir_stops_in_one_line(collector: RunningCollector, tmp_path: Path) -> None:
    state = tmp_path / "state"
    flags = ["--collector", collector.url, "--enroll-secret-file", str(collector.enroll_secret_file), "--state-dir", str(state)]
    service = subprocess.Popen([str(BIN / "farmwatch-agent"), "run", "--interval", "30", *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (state / "identity.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        done = run_agent("once", "--window", "0", *flags)
    finally:
        service.send_signal(signal.SIGTERM)
        service.communicate(timeout=30)
    assert done.returncode == 1
    assert "another farmwatch-agent is using the state dir" in one_line_error(done)
    assert service.returncode == 0
    assert not (state / "next_seq").exists() and not list((state / "spool").iterdir())  # it took no seq


def test_an_unusable_ca_file_is_named_in_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nca_file = "{tmp_path / "missing-ca.pem"}"\n')
    done = run_agent("once", "--window", "0", "--config", str(config), "--collector", "https://127.0.0.1:1",
                     "--enroll-secret-file", str(secret), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 64
    assert "cannot use ca_file" in one_line_error(done)
