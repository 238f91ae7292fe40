"""Remote-access tools recognised however they are named: by install folder, by service, by signer,
and by the relay domain their connections were resolved from (issue 18).

The "tools" are copies of this Python interpreter under innocent names (``notes``), so the process
name says nothing. The domain test runs the installed ``farmwatch-agent once --print`` inside a
network namespace the test makes, with a real dnsmasq (Debian ``dnsmasq-base``) answering on the
namespace's loopback: the agent learns relay addresses from the DNS answers it sees on the wire.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.probe import RemoteAccessProbe
from farmwatch.contract import RemoteAccessTool

BIN = Path(sys.executable).parent
IS_ROOT = getattr(os, "geteuid", lambda: -1)() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: network namespaces, /opt and cgroups")

# A tool: listens on LISTEN_IP, resolves NAME (through the system resolver, as a real tool does),
# connects to the answer on the same port, and holds the connection until stdin closes.
TOOL = """
import socket, sys, time
name, listen_ip, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
server = socket.socket()
server.bind((listen_ip, 0))
server.listen()
port = server.getsockname()[1]
time.sleep(delay)  # let the agent start listening first
address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
outgoing = socket.create_connection(address)
incoming, _ = server.accept()
print(port, flush=True)
sys.stdin.read()
"""


class Tool:
    """A renamed interpreter copy at ``folder/name`` running :data:`TOOL` (optionally in a namespace)."""

    def __init__(self, folder: Path, name: str, resolve: str = "localhost", listen_ip: str = "127.0.0.1",
                 netns: str | None = None, delay: float = 0.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.executable = folder / name
        shutil.copy2(os.path.realpath(sys.executable), self.executable)
        prefix = ["ip", "netns", "exec", netns] if netns else []
        env = {**os.environ, "PYTHONHOME": sys.base_prefix}
        self.process = subprocess.Popen([*prefix, str(self.executable), "-c", TOOL, resolve, listen_ip, str(delay)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.pid = self.process.pid

    def wait_connected(self) -> int:
        assert self.process.stdout is not None
        return int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


def found(pid: int, context: ProbeContext | None = None) -> list[RemoteAccessTool]:
    probe = RemoteAccessProbe(context or ProbeContext())
    return [tool for tool in probe.collect() if tool.pid == pid]


@pytest.mark.slow
def test_an_innocent_name_in_a_catalogued_install_folder_is_recognised_by_path(tmp_path: Path) -> None:
    # LOLRMM: DameWare installs under *\dwrcs\* (any drive, any parent).
    tool = Tool(tmp_path / "dwrcs", "notes")
    try:
        tool.wait_connected()
        [seen] = found(tool.pid)
        assert (seen.tool, seen.process, seen.matched_by) == ("dameware", "notes", ["path"])
        assert seen.connections, "its sockets are reported like a tool found by name"
    finally:
        tool.close()


@pytest.mark.slow
def test_the_same_interpreter_elsewhere_is_not_a_tool(tmp_path: Path) -> None:
    tool = Tool(tmp_path / "bin", "notes")
    try:
        tool.wait_connected()
        assert found(tool.pid) == []
    finally:
        tool.close()


@pytest.fixture
def pitunnel_folder() -> Iterator[Path]:
    """A unique folder inside LOLRMM's Linux install folder of PiTunnel, /opt/pitunnel (removed after)."""
    base = Path("/opt/pitunnel")
    made_base = not base.exists()
    folder = base / f"farmwatch-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder)
    if made_base:
        base.rmdir()


@pytest.mark.slow
@pytest.mark.root
@needs_root
def test_a_renamed_copy_started_from_an_absolute_install_folder_is_recognised_by_path(pitunnel_folder: Path) -> None:
    tool = Tool(pitunnel_folder, "notes")
    try:
        tool.wait_connected()
        [seen] = found(tool.pid)
        assert (seen.tool, seen.matched_by) == ("pitunnel", ["path"])
    finally:
        tool.close()


@pytest.fixture
def systemd_unit_cgroup() -> Iterator[Path]:
    """A cgroup named like Tailscale's systemd unit (tailscaled.service) under a test cgroup."""
    unified = Path("/sys/fs/cgroup/unified")
    root = unified if (unified / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
    parent = root / f"farmwatch-test-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir()
    except OSError as refused:
        pytest.skip(f"cannot make a cgroup here: {refused}")
    unit = parent / "tailscaled.service"
    unit.mkdir()
    yield unit
    for group in (unit, parent):
        for _ in range(50):  # the kernel frees a cgroup shortly after its last process exits
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.root
@needs_root
def test_a_process_in_a_catalogued_systemd_unit_is_recognised_by_service(tmp_path: Path,
                                                                         systemd_unit_cgroup: Path) -> None:
    tool = Tool(tmp_path / "bin", "notes")
    try:
        tool.wait_connected()
        (systemd_unit_cgroup / "cgroup.procs").write_text(str(tool.pid))
        [seen] = found(tool.pid)
        assert (seen.tool, seen.matched_by) == ("tailscale", ["service"])
    finally:
        tool.close()


# --- relay domains learned from DNS answers, in a namespace with a real DNS server -----------------

RELAY = "relay-1a2b3c4d.net.anydesk.com"  # LOLRMM: relay-[a-f0-9]{8}.net.anydesk.com
PITUNNEL_RELAY = "eu1.pitunnel.com"  # LOLRMM: pitunnel.com
UNCATALOGUED = "intranet-wiki.example"


@pytest.fixture
def dns_namespace() -> Iterator[str]:
    """A network namespace with loopback up, dnsmasq answering on 127.0.0.1:53 and a resolv.conf naming it."""
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (deploy/dev/system-packages.txt: dnsmasq-base)")
    name = f"fwdns{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    etc = Path("/etc/netns") / name
    dnsmasq = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")  # ip netns exec mounts it over /etc
        dnsmasq = subprocess.Popen([
            "ip", "netns", "exec", name, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--user=root",
            "--group=root", "--pid-file=", f"--address=/{RELAY}/127.0.0.2", f"--address=/{PITUNNEL_RELAY}/127.0.0.4",
            f"--address=/{UNCATALOGUED}/127.0.0.3",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(50):
            ready = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c",
                                    f"import socket; socket.getaddrinfo({UNCATALOGUED!r}, 80)"], capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"dnsmasq did not answer: {dnsmasq.stderr.read() if dnsmasq.stderr else ''}")
        yield name
    finally:
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.root
@needs_root
def test_connections_to_catalogued_relays_are_recognised_by_domain_and_other_names_leave_no_trace(
        tmp_path: Path, dns_namespace: str, pitunnel_folder: Path) -> None:
    state = tmp_path / "state"
    agent = subprocess.Popen(
        ["ip", "netns", "exec", dns_namespace, str(BIN / "farmwatch-agent"), "once", "--print", "--window", "8",
         "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Started after the agent; each waits before resolving so the agent's listener is up.
    renamed = Tool(tmp_path / "bin", "notes", resolve=RELAY, listen_ip="127.0.0.2", netns=dns_namespace, delay=3)
    in_folder = Tool(pitunnel_folder, "notes", resolve=PITUNNEL_RELAY, listen_ip="127.0.0.4",
                     netns=dns_namespace, delay=3)
    browsing = Tool(tmp_path / "other", "wiki-client", resolve=UNCATALOGUED, listen_ip="127.0.0.3",
                    netns=dns_namespace, delay=3)
    try:
        for tool in (renamed, in_folder, browsing):
            tool.wait_connected()
        out, err = agent.communicate(timeout=120)
    finally:
        for tool in (renamed, in_folder, browsing):
            tool.close()
    assert agent.returncode == 0, err
    report = json.loads(out)
    by_pid = {tool["pid"]: tool for tool in report["remote_access"]}
    # The renamed copy in an innocent folder: recognised only by where it connects.
    seen = by_pid[renamed.pid]
    assert (seen["tool"], seen["process"], seen["matched_by"]) == ("anydesk", "notes", ["domain"])
    relayed = [c for c in seen["connections"] if c["remote_ip"] == "127.0.0.2" and c["direction"] == "outbound"]
    assert [c["domain"] for c in relayed] == ["net.anydesk.com"]
    # The copy in PiTunnel's folder, talking to PiTunnel's relay: both ways agree.
    assert by_pid[in_folder.pid]["tool"] == "pitunnel"
    assert by_pid[in_folder.pid]["matched_by"] == ["path", "domain"]
    # The uncatalogued lookup: neither its name nor its address anywhere in the report or the state.
    assert browsing.pid not in by_pid
    assert UNCATALOGUED not in out and "127.0.0.3" not in out and "intranet-wiki" not in out
    for stored in state.rglob("*"):
        if stored.is_file():
            assert b"intranet-wiki" not in stored.read_bytes(), stored
    assert not any("CAP_NET_RAW" in e["message"] for e in report["errors"]), report["errors"]
