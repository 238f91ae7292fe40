"""What the remote-access probe reads besides names: signers, services, DNS answers, the catalogue lookups.

Windows and macOS answers are written by hand (tests/agent/data/remote_access/README.md says from
which documented formats); the probe-level test runs a real renamed process on this Linux box and
answers only the macOS commands (``launchctl``, ``codesign``) through the probe's injected runner.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from farmwatch.agent.probes.base import ProbeContext
from farmwatch.agent.probes.remote_access.catalog import CATALOG_PATH, Catalog, catalog, path_key
from farmwatch.agent.probes.remote_access.dns_answers import (
    MAX_ADDRESSES,
    WINDOWS_RESOLVER_CACHE,
    DnsAnswerListener,
    RelayAddresses,
    learn_windows_resolver_cache,
    parse_answers,
    udp_payload,
)
from farmwatch.agent.probes.remote_access.probe import RemoteAccessProbe
from farmwatch.agent.probes.remote_access.services import (
    parse_launchctl_list,
    services_by_pid,
    unit_of,
    windows_services,
)
from farmwatch.agent.probes.remote_access.signers import (
    authenticode_command,
    common_name,
    parse_authenticode,
    parse_codesign,
    read_signers,
)

DATA = Path(__file__).parent / "data" / "remote_access"


# --- signers -------------------------------------------------------------------------------------

def test_authenticode_answers_give_the_signer_of_valid_signatures_only() -> None:
    signers = parse_authenticode((DATA / "authenticode.tsv").read_text())
    assert signers == {
        "C:\\Program Files\\TeamViewer\\TeamViewer_Service.exe": "TeamViewer Germany GmbH",
        "C:\\Users\\ana\\AppData\\Local\\Temp\\notepad.exe": "AnyDesk Software GmbH",  # renamed, still signed
        "C:\\Windows\\System32\\notepad.exe": "Microsoft Windows",
    }  # HashMismatch, a self-made certificate (UnknownError) and NotSigned give nothing
    assert catalog().by_signer(signers["C:\\Users\\ana\\AppData\\Local\\Temp\\notepad.exe"]) == "anydesk"
    assert catalog().by_signer("Microsoft Windows") is None


@pytest.mark.parametrize(("subject", "name"), [
    ("CN=TeamViewer Germany GmbH, O=TeamViewer Germany GmbH, C=DE", "TeamViewer Germany GmbH"),
    ('CN="Foo, Inc.", O="Foo, Inc.", C=US', "Foo, Inc."),
    ('O=Bar, CN="Say ""hi"" Ltd"', 'Say "hi" Ltd'),
    ("O=No Common Name", None),
])
def test_common_name_of_an_x500_subject(subject: str, name: str | None) -> None:
    assert common_name(subject) == name


def test_one_powershell_call_checks_every_path_with_quotes_escaped() -> None:
    argv = authenticode_command(["C:\\a\\x.exe", "C:\\O'Brien\\y.exe"])
    assert argv[:4] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-EncodedCommand"]
    script = base64.b64decode(argv[4]).decode("utf-16-le")
    assert "@('C:\\a\\x.exe','C:\\O''Brien\\y.exe')" in script and "Get-AuthenticodeSignature -LiteralPath" in script


def test_read_signers_on_windows_runs_one_command_for_all_paths() -> None:
    calls: list[Sequence[str]] = []

    def run(argv: Sequence[str]) -> str:
        calls.append(argv)
        return (DATA / "authenticode.tsv").read_text()

    found = read_signers(["C:\\Program Files\\TeamViewer\\TeamViewer_Service.exe", "C:\\Tools\\unsigned.exe"],
                         "win32", run)
    assert len(calls) == 1 and found["C:\\Program Files\\TeamViewer\\TeamViewer_Service.exe"] == "TeamViewer Germany GmbH"
    assert read_signers(["/usr/bin/x"], "linux", run) == {} and len(calls) == 1  # Linux has no signatures


@pytest.mark.parametrize(("answer", "signer"), [
    ("codesign-developer-id.txt", "TeamViewer Germany GmbH"),
    ("codesign-adhoc.txt", None),
    ("codesign-self-signed.txt", None),  # names the vendor, but Apple's root does not anchor it
])
def test_codesign_answers(answer: str, signer: str | None) -> None:
    assert parse_codesign((DATA / answer).read_text()) == signer


# --- services ------------------------------------------------------------------------------------

def test_launchctl_list_gives_running_jobs_by_pid() -> None:
    running = parse_launchctl_list((DATA / "launchctl-list.txt").read_text())
    by_pid = services_by_pid(running)
    assert by_pid == {412: ["com.teamviewer.teamviewer_service"], 1203: ["com.apple.Finder"]}
    assert catalog().by_service("com.teamviewer.teamviewer_service") == "teamviewer"


def test_windows_services_by_service_and_display_name() -> None:
    # Records shaped like psutil's WindowsService.as_dict() (written by hand: no Windows here).
    entries = [
        {"name": "AnyDesk", "display_name": "AnyDesk Service", "pid": 3120, "status": "running"},
        {"name": "AteraAgent", "display_name": "AteraAgent", "pid": 0, "status": "stopped"},
        {"name": "Spooler", "display_name": "Print Spooler", "pid": 2044, "status": "running"},
    ]
    by_pid = services_by_pid(windows_services(entries))
    assert by_pid == {3120: ["AnyDesk", "AnyDesk Service"], 2044: ["Spooler", "Print Spooler"]}
    assert catalog().by_service("AnyDesk Service") == "anydesk" and catalog().by_service("Spooler") is None


@pytest.mark.parametrize(("cgroup", "unit"), [
    ("0::/system.slice/tailscaled.service\n", "tailscaled.service"),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/rustdesk.service\n", "rustdesk.service"),
    ("12:pids:/\n1:name=systemd:/system.slice/anydesk.service\n0::/\n", "anydesk.service"),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
])
def test_the_systemd_unit_of_a_process_comes_from_its_cgroup(tmp_path: Path, cgroup: str, unit: str | None) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(cgroup)
    assert unit_of(42, tmp_path) == unit
    assert unit_of(43, tmp_path) is None  # gone


# --- the probe on macOS answers, with a real process --------------------------------------------

@pytest.mark.slow
def test_on_macos_a_renamed_process_is_recognised_by_signer_and_by_launchd_job(tmp_path: Path) -> None:
    from test_remote_access_however_named import Tool

    signed, in_job = Tool(tmp_path / "a", "notes"), Tool(tmp_path / "b", "helper-x")
    try:
        signed.wait_connected()
        in_job.wait_connected()
        asked: list[str] = []

        def run(argv: Sequence[str]) -> str:
            if list(argv) == ["launchctl", "list"]:
                return f"PID\tStatus\tLabel\n{in_job.pid}\t0\tcom.teamviewer.teamviewer_service\n"
            asked.append(argv[-1])
            if argv[-1] == str(signed.executable):
                return (DATA / "codesign-developer-id.txt").read_text()
            return (DATA / "codesign-adhoc.txt").read_text()

        probe = RemoteAccessProbe(ProbeContext(platform="darwin", run=run))
        by_pid = {tool.pid: tool for tool in probe.collect()}
        assert (by_pid[signed.pid].tool, by_pid[signed.pid].matched_by) == ("teamviewer", ["signer"])
        assert (by_pid[in_job.pid].tool, by_pid[in_job.pid].matched_by) == ("teamviewer", ["service"])
        assert str(in_job.executable) not in asked  # already recognised: its signature is not read
        first_window = set(asked)
        assert str(signed.executable) in first_window
        probe.collect()
        assert not set(asked[len(first_window):]) & first_window, "signers are cached between windows"
    finally:
        signed.close()
        in_job.close()


# --- DNS answers ---------------------------------------------------------------------------------

def _name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def _response(question: str, records: list[tuple[str | bytes, int, bytes]], flags: int = 0x8180) -> bytes:
    """A DNS message written by hand (RFC 1035 §4): header, one question, answer records."""
    out = struct.pack("!HHHHHH", 0x1234, flags, 1, len(records), 0, 0) + _name(question) + struct.pack("!HH", 1, 1)
    for owner, kind, data in records:
        owner_bytes = owner if isinstance(owner, bytes) else _name(owner)
        out += owner_bytes + struct.pack("!HHIH", kind, 1, 60, len(data)) + data
    return out


POINTER_TO_QUESTION = b"\xc0\x0c"  # the question's name starts right after the 12-byte header


def test_a_cname_chain_gives_the_address_every_name_that_leads_to_it() -> None:
    message = _response("relay-1a2b3c4d.net.anydesk.com", [
        (POINTER_TO_QUESTION, 5, _name("edge7.cdn-provider.example")),
        ("edge7.cdn-provider.example", 1, bytes([198, 51, 100, 7])),
        ("edge7.cdn-provider.example", 28, bytes(15) + b"\x01"),
    ])
    assert parse_answers(message) == [
        (["edge7.cdn-provider.example", "relay-1a2b3c4d.net.anydesk.com"], "198.51.100.7"),
        (["edge7.cdn-provider.example", "relay-1a2b3c4d.net.anydesk.com"], "::1"),
    ]
    relays = RelayAddresses(catalog())
    relays.learn_message(message)
    assert relays.lookup("198.51.100.7") == ("anydesk", "net.anydesk.com")


@pytest.mark.root
def test_the_listener_learns_answers_sent_from_port_53_only() -> None:
    """The real packet socket with its BPF filter attached: a catalogued answer from UDP port 53 is
    learned, the same kind of message from another port never reaches the listener."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_NET_RAW) for the packet socket")
    relays = RelayAddresses(catalog())
    listener = DnsAnswerListener(relays)
    listener.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as resolver, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as asker:
            try:
                resolver.bind(("127.0.0.9", 53))
            except OSError as taken:
                pytest.skip(f"cannot bind UDP port 53 on 127.0.0.9: {taken}")
            asker.bind(("127.0.0.1", 0))
            for sender, address in ((other, 9), (resolver, 8)):
                record = (POINTER_TO_QUESTION, 1, bytes([198, 51, 100, address]))
                sender.sendto(_response(f"relay-{address}.net.anydesk.com", [record]), asker.getsockname())
            deadline = time.monotonic() + 10
            while relays.lookup("198.51.100.8") is None and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        listener.stop()
    assert relays.lookup("198.51.100.8") == ("anydesk", "net.anydesk.com")
    assert relays.lookup("198.51.100.9") is None  # sent first, from another port: filtered out


def test_uncatalogued_names_are_not_kept_and_queries_and_garbage_are_ignored() -> None:
    relays = RelayAddresses(catalog())
    relays.learn_message(_response("intranet-wiki.example", [(POINTER_TO_QUESTION, 1, bytes([10, 1, 2, 3]))]))
    relays.learn_message(_response("boot.net.anydesk.com", [], flags=0x0100))  # a query
    for broken in (b"", b"\x00" * 11, _response("x.example", [(b"\xc0\x0c", 1, b"\x01")])[:-1],
                   struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c"):  # a pointer to itself
        relays.learn_message(broken)
    assert len(relays) == 0 and relays.lookup("10.1.2.3") is None
    assert "intranet-wiki" not in repr(relays.__dict__)


def test_relay_addresses_are_bounded_and_expire() -> None:
    now = [0.0]
    relays = RelayAddresses(catalog(), clock=lambda: now[0])
    for i in range(MAX_ADDRESSES + 10):
        relays.learn(["connect.ngrok-agent.com"], f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(relays) == MAX_ADDRESSES and relays.lookup("10.0.0.0") is None
    assert relays.lookup("10.0.0.20") == ("ngrok", "connect.ngrok-agent.com")
    now[0] = 25 * 3600
    assert relays.lookup("10.0.0.20") is None


def test_windows_resolver_cache_gives_relay_addresses_and_keeps_no_other_name() -> None:
    relays = RelayAddresses(catalog())
    learn_windows_resolver_cache((DATA / "dns-client-cache.tsv").read_text(), relays)
    assert relays.lookup("192.0.2.10") == ("anydesk", "boot.net.anydesk.com")  # the most specific catalogued domain
    assert relays.lookup("192.0.2.11") == ("anydesk", "net.anydesk.com")  # through the CNAME
    assert relays.lookup("2001:db8::7") == ("tailscale", "tailscale.com")
    assert relays.lookup("10.20.30.40") is None and len(relays) == 3
    assert "intranet-wiki" not in repr(relays.__dict__)
    assert WINDOWS_RESOLVER_CACHE[0] == "powershell.exe" and "Get-DnsClientCache" in WINDOWS_RESOLVER_CACHE[-1]


def test_udp_payload_of_ipv4_and_ipv6_packets() -> None:
    ipv4 = bytes([0x46]) + bytes(23) + b"UDPHDR!!" + b"dns"  # a 24-byte header (one option word)
    ipv6 = bytes([0x60]) + bytes(39) + b"UDPHDR!!" + b"dns"
    assert udp_payload(ipv4) == udp_payload(ipv6) == b"dns"


# --- catalogue lookups ---------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "tool"), [
    ("C:\\Program Files (x86)\\AnyDesk\\AnyDesk.exe", "anydesk"),
    ("D:\\Program Files\\TeamViewer\\x64\\notepad.exe", "teamviewer"),  # any drive, any depth
    ("/Applications/AnyDesk.app/Contents/MacOS/AnyDesk", "anydesk"),
    ("/opt/teamviewer/tv_bin/teamviewerd", "teamviewer"),
    ("C:\\Program Files\\AnyDeskHelper\\x.exe", None),  # a folder name's prefix is not the folder
    ("C:\\Program Files\\notepad.exe", None),
    ("/usr/local/bin/python3", None),
])
def test_install_folders(path: str, tool: str | None) -> None:
    assert catalog().by_path(path) == tool


@pytest.mark.parametrize(("name", "found"), [
    ("relay-80e496c0.net.anydesk.com", ("anydesk", "net.anydesk.com")),
    ("RELAY-80E496C0.NET.ANYDESK.COM.", ("anydesk", "net.anydesk.com")),
    ("login.tailscale.com", ("tailscale", "tailscale.com")),
    ("notanydesk.com", None),
    ("github.com", None),
    ("com", None),
])
def test_relay_domains_match_the_domain_and_its_subdomains(name: str, found: tuple[str, str] | None) -> None:
    assert catalog().by_domain(name) == found


def test_every_install_folder_gives_the_tool_of_the_first_listed_folder_that_holds_the_path() -> None:
    """Issue 13 split the folders into a dict (no wildcards) and a smaller regex (the rest): checked
    against the plain reading of the catalogue, one folder at a time in catalogue order, on a path
    inside, beside and above every folder (wildcards filled in), in Windows and Unix spelling."""
    listed = [(folder, tool["id"]) for tool in json.loads(CATALOG_PATH.read_text("utf-8"))["tools"]
              for folder in tool.get("folders", [])]

    patterns = [(re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in folder) + "/.*",
                            re.DOTALL), tool) for folder, tool in listed]

    def first_holder(path: str) -> str | None:
        return next((tool for pattern, tool in patterns if pattern.fullmatch(path_key(path))), None)

    paths = []
    for folder, _ in listed:
        inside = folder.replace("*", "any thing").replace("?", "D")
        paths += [f"{inside}/app.exe", f"{inside}/x64/deeper/tool", f"{inside}x/app.exe", inside,
                  inside.upper().replace("/", "\\") + "\\APP.EXE"]
    held = [path for path in paths if first_holder(path) is not None]
    assert len(held) > len(listed)
    assert [catalog().by_path(path) for path in paths] == [first_holder(path) for path in paths]


def test_a_catalogue_without_folders_matches_no_path() -> None:
    empty = Catalog.from_json({"tools": [{"id": "x", "processes": ["x"]}]})
    assert empty.by_path("/opt/x/x") is None and empty.by_name("X.exe") == "x"
