"""`make package`'s .deb on a throwaway Debian: installs, starts under systemd, reports, purges clean.

The machine is a cached mmdebstrap root booted by systemd-nspawn (tests/fixtures/debian_root.py
says why and how); the collector is the real ``farmwatch-collector serve`` on 127.0.0.1, which the
container reaches because it shares the host's network namespace. The configuration arrives the
way an MDM pushes it: files written into /etc/farmwatch before the package is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from agent_procs import export
from collector_process import RunningCollector
from debian_root import BootedRoot, missing_tools

import farmwatch

REPO = Path(__file__).resolve().parents[2]
UNIT = "farmwatch-agent.service"
HOSTNAME = "fw-deb-laptop"
# Paths that change under any running system (or are dpkg's own books): left out of the
# before/after comparison. Everything else must be exactly as it was before the install.
VOLATILE = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache", "/var/lib/dpkg",
            "/var/lib/systemd/timers", "/mnt")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="dpkg -i into a booted container needs root"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"missing {', '.join(missing_tools())} "
                       "(Debian packages in deploy/dev/system-packages.txt)"),
]


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package exactly as `make package` builds it."""
    built = subprocess.run(["make", "--no-print-directory", "package"], cwd=REPO, capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    package = Path(built.stdout.strip().splitlines()[-1])
    if not package.is_absolute():
        package = REPO / package
    assert package.name == f"farmwatch-agent_{farmwatch.__version__}_{_arch()}.deb" and package.exists()
    return package


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def _push_config(machine: BootedRoot, collector: RunningCollector) -> None:
    """What the admin's MDM does: agent.toml and the enrol secret (0600) in /etc/farmwatch."""
    etc = machine.root / "etc" / "farmwatch"
    etc.mkdir(mode=0o755)
    (etc / "agent.toml").write_text(
        "[agent]\n"
        f'collector = "{collector.url}"\n'
        'enroll_secret_file = "/etc/farmwatch/enroll-secret"\n'
        'salt = "deb-test-company-salt"\n'
        "interval_seconds = 3\n"
    )
    secret = etc / "enroll-secret"
    secret.write_text(collector.enroll_secret + "\n")
    secret.chmod(0o600)


def _reports_from(collector: RunningCollector, hostname: str, timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = [r["report"] for r in export(collector) if r["report"]["agent"]["hostname"] == hostname]
        if mine:
            return mine
        time.sleep(1)
    return []


def test_the_deb_installs_starts_reports_and_purges_without_a_trace(
    deb: Path, collector: RunningCollector, tmp_path: Path
) -> None:
    machine = BootedRoot(tmp_path / "laptop", HOSTNAME)
    try:
        machine.boot(read_only_binds={deb.parent: "/mnt/packages"})
        _push_config(machine, collector)
        before = machine.files(VOLATILE)

        machine.run("dpkg", "-i", f"/mnt/packages/{deb.name}")
        assert machine.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"

        reports = _reports_from(collector, HOSTNAME)
        status = machine.run("systemctl", "status", "--no-pager", UNIT, check=False).stdout
        journal = machine.run("journalctl", "--no-pager", "-u", UNIT, check=False).stdout
        assert reports, f"no report from the installed agent\n{status}\n{journal}\n{collector.log()}"
        assert {r["agent"]["version"] for r in reports} == {farmwatch.__version__}
        assert machine.run("systemctl", "is-active", UNIT).stdout.strip() == "active"
        main_pid = machine.run("systemctl", "show", "--property=MainPID", "--value", UNIT).stdout.strip()
        assert machine.run("readlink", f"/proc/{main_pid}/exe").stdout.strip() == "/usr/lib/farmwatch-agent/farmwatch-agent"
        state = machine.root / "var" / "lib" / "farmwatch-agent"
        assert (state.stat().st_mode & 0o777) == 0o700 and any(state.iterdir())

        installed = machine.files(VOLATILE) - before
        # /lib is /usr/lib in Debian's merged /usr: the unit the package ships in /lib lands there.
        assert {"/usr/bin/farmwatch-agent", "/usr/lib/farmwatch-agent/farmwatch-agent", f"/usr/lib/systemd/system/{UNIT}",
                f"/etc/systemd/system/multi-user.target.wants/{UNIT}", "/var/lib/farmwatch-agent"} <= installed

        machine.run("dpkg", "--purge", "farmwatch-agent")
        assert [p for p in machine.processes() if p[1].startswith("farmwatch")] == []
        assert machine.run("systemctl", "show", "--property=LoadState", "--value", UNIT).stdout.strip() == "not-found"
        after = machine.files(VOLATILE)
        assert (sorted(after - before), sorted(before - after)) == ([], [])
        assert machine.run("dpkg-query", "-W", "farmwatch-agent", check=False).returncode != 0
    finally:
        machine.shutdown()
        shutil.rmtree(machine.root, ignore_errors=True)  # 500 MB unpacked: do not leave it to pytest
