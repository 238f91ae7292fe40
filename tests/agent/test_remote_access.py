"""The remote-access probe against real processes, and the catalogue it matches names against.

The "tools" are copies of this Python interpreter renamed ``AnyDesk`` etc.: the probe sees a real
process with that name holding real loopback TCP connections.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from agent_procs import NamedProcess

from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.probe import CATALOG_PATH, RemoteAccessProbe, tool_for
from farmwatch.contract import RemoteAccessTool

ROOT = Path(__file__).resolve().parents[2]
LOLRMM = ROOT.parent / "shared" / "data" / "lolrmm" / "yaml"


@pytest.fixture
def anydesk(tmp_path: Path) -> Iterator[NamedProcess]:
    holder = NamedProcess(tmp_path, "AnyDesk")
    yield holder
    holder.close()


def found_by_pid(pid: int) -> RemoteAccessTool:
    probe = RemoteAccessProbe(ProbeContext())
    matches = [tool for tool in probe.collect() if tool.pid == pid]
    assert len(matches) == 1, probe.problems
    return matches[0]


@pytest.mark.slow
def test_a_running_tool_is_found_with_its_ports_and_session_directions(anydesk: NamedProcess) -> None:
    tool = found_by_pid(anydesk.pid)
    assert (tool.tool, tool.process) == ("anydesk", "AnyDesk")
    assert tool.listening == [anydesk.listen_port]
    by_local = {c.local_port: c for c in tool.connections}
    inbound, outbound = by_local[anydesk.listen_port], by_local[anydesk.client_port]
    assert (inbound.direction, inbound.remote_port, inbound.remote_ip) == ("inbound", anydesk.client_port, "127.0.0.1")
    assert (outbound.direction, outbound.remote_port) == ("outbound", anydesk.listen_port)
    assert inbound.state == outbound.state == "ESTABLISHED"
    assert tool.started_at is not None and tool.started_at <= datetime.now(timezone.utc)


@pytest.mark.slow
def test_the_command_line_is_never_used_to_match(tmp_path: Path) -> None:
    # A process whose argv names AnyDesk but whose own name is not a catalogued one stays unseen.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "AnyDesk", "--service"],
                             stdin=subprocess.PIPE)
    try:
        probe = RemoteAccessProbe(ProbeContext())
        assert child.pid not in {tool.pid for tool in probe.collect()}
    finally:
        child.communicate(b"")


@pytest.mark.slow
def test_a_tool_named_in_windows_style_is_found(tmp_path: Path) -> None:
    holder = NamedProcess(tmp_path, "TeamViewer.exe")
    try:
        assert found_by_pid(holder.pid).tool == "teamviewer"
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("name", "tool"),
    [pytest.param("AnyDesk.exe", "anydesk", id="windows-name"),
     pytest.param("anydesk", "anydesk", id="linux-name"),
     pytest.param("TEAMVIEWERD", "teamviewer", id="case-insensitive"),
     pytest.param("chrome-remote-desktop-host", "chrome-remote-desktop", id="crd-linux"),
     pytest.param("remoting_host.exe", "chrome-remote-desktop", id="crd-windows"),
     pytest.param("x11vnc", "vnc", id="x11vnc"),
     pytest.param("wayvnc", "vnc", id="wayvnc"),
     pytest.param("parsecd", "parsec", id="parsec"),
     pytest.param("ScreenConnect.ClientService.exe", "screenconnect", id="screenconnect"),
     pytest.param("rustdesk", "rustdesk", id="rustdesk"),
     pytest.param("xrdp-sesman", "xrdp", id="xrdp"),
     pytest.param("anydesk-helper", None, id="prefix-is-not-a-match"),
     pytest.param("dwm.exe", None, id="generic-windows-name-dropped"),
     pytest.param("setup.exe", None, id="generic-installer-dropped"),
     pytest.param("python3", None, id="ordinary-process")],
)
def test_names_match_case_insensitively_without_exe(name: str, tool: str | None) -> None:
    assert tool_for(name) == tool


def test_every_catalogue_tool_cites_its_source_and_lolrmm_is_attributed() -> None:
    catalog = json.loads(CATALOG_PATH.read_text())
    assert "LOLRMM" in catalog["about"] and catalog["license"] == "Apache-2.0"
    assert (Path(str(CATALOG_PATH)).parent / "LOLRMM-LICENSE").read_text().split()[:2] == ["Apache", "License"]
    ways = ("processes", "folders", "services", "signers", "domains", "addresses")
    for tool in catalog["tools"]:
        assert any(tool.get(way) for way in ways) and tool["sources"], tool["id"]
        assert tool["kind"] in ("remote_control", "tunnel"), tool["id"]
        assert all(p == p.lower() and not p.endswith(".exe") for p in tool.get("processes", [])), tool["id"]
        assert all(f == f.lower() and "\\" not in f for f in tool.get("folders", [])), tool["id"]
    ids = {tool["id"] for tool in catalog["tools"]}
    assert {"anydesk", "teamviewer", "rustdesk", "chrome-remote-desktop", "vnc", "parsec", "screenconnect"} <= ids
    # Tools the process-name-only catalogue missed (issue 18), and the tunnels, weighed apart.
    assert {"quick-assist", "zoho-assist", "nomachine", "ninjarmm", "dameware", "simplehelp", "tactical-rmm",
            "aeroadmin", "litemanager", "tightvnc", "ultravnc"} <= ids
    kinds = {tool["id"]: tool["kind"] for tool in catalog["tools"]}
    assert {kinds[t] for t in ("ngrok", "tailscale", "zerotier", "cloudflare-tunnel")} == {"tunnel"}
    assert kinds["anydesk"] == "remote_control"


def test_generic_names_folders_domains_and_shared_signers_are_not_catalogued() -> None:
    catalog = json.loads(CATALOG_PATH.read_text())
    every = {way: {v for tool in catalog["tools"] for v in tool.get(way, [])}
             for way in ("processes", "folders", "signers", "domains")}
    assert not {"setup", "dwm", "agent", "svchost"} & every["processes"]
    assert not {"/usr/local/bin", "?:/program files", "?:/windows/system32", "/opt"} & every["folders"]
    assert not {"github.com", "amazonaws.com", "microsoft.com", "r2.cloudflarestorage.com"} & every["domains"]
    assert not {"Microsoft Corporation", "Simon Tatham", "win.rar GmbH"} & every["signers"]
    assert "net.anydesk.com" in every["domains"]  # relay-[a-f0-9]{8}.net.anydesk.com keeps its fixed part


@pytest.mark.skipif(not LOLRMM.is_dir(), reason=f"LOLRMM source data not present at {LOLRMM}")
def test_the_committed_catalogue_is_what_the_builder_makes_from_lolrmm(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    done = subprocess.run([sys.executable, str(ROOT / "deploy/dev/build_rmm_catalog.py"), str(LOLRMM), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == CATALOG_PATH.read_text()


DROPPED_PRIVILEGES = """
import json, os, sys
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.catalog import catalog
from farmwatch.agent.probes.remote_access.probe import RemoteAccessProbe
catalog()  # read while root: the checkout may sit in a private (0700) directory nobody cannot read
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # nobody
probe = RemoteAccessProbe(ProbeContext())
tools = [t for t in probe.collect() if t.pid == int(sys.argv[1])]
print(json.dumps({"connections": [len(t.connections) for t in tools], "problems": probe.problems}))
"""


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(getattr(os, "geteuid", lambda: -1)() != 0,
                    reason="needs root: the tool runs as root and the probe drops to nobody")
def test_without_root_a_tool_of_another_user_is_reported_with_a_problem(anydesk: NamedProcess) -> None:
    done = subprocess.run([sys.executable, "-c", DROPPED_PRIVILEGES, str(anydesk.pid)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["connections"] == [0]  # the kernel does not tie root's sockets to the process for nobody
    assert any(f"pid {anydesk.pid}" in p and "not root" in p for p in seen["problems"]), seen["problems"]


def test_the_readme_coverage_table_is_what_the_shipped_catalogue_covers() -> None:
    spec = importlib.util.spec_from_file_location("build_rmm_catalog", ROOT / "deploy/dev/build_rmm_catalog.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    table = builder.coverage(json.loads(CATALOG_PATH.read_text()))
    assert table in (ROOT / "README.md").read_text()
    assert "| any of these | " in table and builder.LOLRMM_COMMIT in table


WITHOUT_RAW_SOCKETS = """
import json, os
from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.catalog import catalog
from farmwatch.agent.probes.remote_access.probe import RemoteAccessProbe
catalog()  # read while root: the checkout may sit in a private (0700) directory nobody cannot read
os.setgroups([]); os.setgid(65534); os.setuid(65534)  # nobody: no CAP_NET_RAW
probe = RemoteAccessProbe(ProbeContext())
probe.start()
probe.collect()
first = list(probe.problems)
probe.problems.clear()
probe.collect()
print(json.dumps({"first": first, "second": probe.problems}))
"""


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(getattr(os, "geteuid", lambda: -1)() != 0, reason="needs root to drop to nobody")
def test_without_cap_net_raw_the_probe_says_once_that_relay_domains_are_not_learned() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAW_SOCKETS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert [p for p in seen["first"] if "CAP_NET_RAW" in p] and not [p for p in seen["second"] if "CAP_NET_RAW" in p]
