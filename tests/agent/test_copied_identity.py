"""One identity used by two machines (issue 16): a copied state dir is seen, not trusted.

Real ``farmwatch-agent once`` processes against the real collector. The second "machine" is this
box with another ``/etc/machine-id`` bind-mounted over the real one in a private mount namespace
(``unshare --mount``: root only), so its agent computes another hardware id, exactly as the same
state dir copied onto another laptop would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_procs import BIN, agent_once, analyst_get, export
from collector_process import RunningCollector

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _agent_once_on_another_machine(collector: RunningCollector, state_dir: Path, machine_id: Path) -> (
        subprocess.CompletedProcess[str]):
    agent = [str(BIN / "farmwatch-agent"), "once", "--collector", collector.url, "--enroll-secret-file",
             str(collector.enroll_secret_file), "--state-dir", str(state_dir), "--window", "0.2"]
    script = 'mount --bind "$1" /etc/machine-id && shift && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           str(machine_id), *agent], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to give a second agent another /etc/machine-id")
def test_a_state_dir_copied_to_another_machine_is_a_copied_identity_finding(
        collector_factory: Callable[..., RunningCollector], tmp_path: Path) -> None:
    collector = collector_factory()
    original, copy = tmp_path / "state", tmp_path / "state-copy"
    assert agent_once(collector, original).returncode == 0
    shutil.copytree(original, copy)  # identity, token and counter: everything a copy needs
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    copied = _agent_once_on_another_machine(collector, copy, machine_id)
    assert copied.returncode == 0, copied.stderr
    assert agent_once(collector, original).returncode == 0

    records = export(collector)
    assert len({r["report"]["device_id"] for r in records}) == 1 and len(records) == 3
    hardware = [r["report"]["agent"]["hardware_id"] for r in records]
    assert all(hardware) and len(set(hardware)) == 2

    device = records[0]["report"]["device_id"]
    verdict = analyst_get(collector, f"/api/v1/devices/{device}").json()
    (health,) = [f for f in verdict["findings"] if f["detector"] == "agent_health"]
    assert health["evidence"]["hardware_ids"] == 2 and "copied_identity" in health["evidence"]["parts"]
    assert "used from 2 machines" in health["summary"]
