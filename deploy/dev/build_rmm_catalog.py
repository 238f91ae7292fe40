"""Build ``farmwatch/agent/data/rmm_catalog.json`` from the LOLRMM catalogue plus vendor-documented facts.

Usage: ``python deploy/dev/build_rmm_catalog.py [LOLRMM_YAML_DIR] [OUT_JSON]``
(defaults: ``../shared/data/lolrmm/yaml`` and ``farmwatch/agent/data/rmm_catalog.json``);
``--coverage`` prints, instead of writing, how many LOLRMM tools each way of recognising covers.

Every LOLRMM entry (magicsword-io/LOLRMM, Apache-2.0) is read for what identifies a running tool:
executable names (PE metadata ``Filename``/``OriginalFileName`` and the file names in
``Details.InstallationPaths``), install folders (the folders in those paths), service names (Windows
services from ``Artifacts.EventLog``/``Other``, systemd units and launchd labels from unit and plist
paths), code-signing subjects (``CodeSigning``), and relay/service domains, addresses and ports
(``Artifacts.Network``). LOLRMM rarely names Linux and macOS processes or services, so
:data:`VENDOR_FACTS` adds those, each with its source. The JSON is committed, so installing the
agent needs neither LOLRMM nor PyYAML.

What is dropped, and why (a catalogue that matches ordinary software flags every laptop):
- names in :data:`GENERIC_NAMES`, and wildcard names (``UltraVNC*.exe`` are installer patterns);
- ``.dll``/``.msi``/``.zip`` files (never a process);
- folders in :data:`GENERIC_FOLDERS` (``/usr/local/bin``, ``C:\\Windows`` … hold everything) and
  folders with no tool-specific part (``C:\\*``);
- signers in :data:`GENERIC_SIGNERS` (their certificates sign ordinary software too);
- domains in :data:`GENERIC_DOMAINS` (hosting, CDN and code-hosting platforms serve everyone),
  placeholders (``user_managed``, ``<on-prem-…>``) and wildcard domains whose fixed part is generic;
- a fact (name, folder, service, signer, domain) that several tools claim goes to the one whose
  own name or website it carries (``splashtop.com`` to Splashtop); claimed by several unrelated
  tools (``Microsoft Corporation``, PuTTY's ``Simon Tatham``), it is dropped from all.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "lolrmm" / "yaml"
DEFAULT_OUT = ROOT / "farmwatch" / "agent" / "data" / "rmm_catalog.json"
LOLRMM_COMMIT = "3c75cf091b10bf7e8ecd576055c44d172b35ff21"  # from ../shared/data/lolrmm/SOURCE.md
FACTS = ("processes", "folders", "services", "signers", "domains")

# LOLRMM tool files whose id must stay the one reports already carry (the rest get a slug of the name).
REPORT_IDS = {"chrome_remote_desktop": "chrome-remote-desktop"}

# Tools that make the laptop reachable (a tunnel or overlay network) rather than drive its screen:
# the detectors weigh them apart from interactive remote control.
TUNNELS = {"cloudflare-tunnel", "dev-tunnels-aka-visual-studio-dev-tunnel", "localxpose", "netbird", "ngrok",
           "pitunnel", "tailscale", "visual-studio-dev-tunnel", "zerotier"}

# One website page that LOLRMM gives to two different products (the rest of a shared page is one tool).
DISTINCT_PRODUCTS_SITES = {"ericom.com/connect-accessnow"}

# Names LOLRMM lists that are not specific to the tool: matching them would flag ordinary machines.
# dwm.exe is Windows' Desktop Window Manager; plink is PuTTY's; the rest are generic
# installer/updater/agent names that many unrelated products use.
GENERIC_NAMES = {
    "agent", "appcore", "autoupdate", "clm", "dwm", "installcore", "installshield setup",
    "notificationhelper", "plink", "recycler", "selfupdater", "setup", "si", "update-shim", "upload",
    "install", "installer", "uninstall", "unins000", "update", "updater", "service", "client", "server",
    "launcher", "helper", "tray", "msiexec", "rundll32", "cmd", "powershell", "svchost", "explorer",
}

# Folders that hold every program: a process running from one says nothing about which.
GENERIC_FOLDERS = {
    "?:", "?:/program files", "?:/program files (x86)", "?:/programdata", "?:/windows", "?:/windows/system32",
    "?:/windows/syswow64", "?:/windows/temp", "?:/users", "?:/users/*", "?:/users/*/appdata",
    "?:/users/*/appdata/local", "?:/users/*/appdata/roaming", "?:/users/*/appdata/local/temp",
    "?:/users/*/downloads", "?:/users/*/desktop", "/usr/bin", "/usr/local/bin", "/usr/sbin", "/bin", "/sbin",
    "/etc", "/etc/systemd/system", "/lib/systemd/system", "/etc/init.d", "/opt", "/usr", "/usr/local", "/var",
    "/var/lib", "/applications", "/library", "/library/application support", "/library/launchdaemons",
    "/library/launchagents", "*", "",
}

# Shared platforms (cloud hosting, CDNs, code hosting, public STUN): every laptop talks to them.
GENERIC_DOMAINS = {
    "amazonaws.com", "cloudfront.net", "azureedge.net", "windows.net", "core.windows.net",
    "blob.core.windows.net", "azurewebsites.net", "cloudapp.net", "cloudflare.net", "cloudflare.com",
    "cloudflarestorage.com", "r2.cloudflarestorage.com", "googleapis.com", "google.com", "gstatic.com",
    "microsoft.com", "microsoftonline.com", "live.com", "apple.com", "github.com", "githubusercontent.com",
    "raw.githubusercontent.com", "github.io", "gitlab.com", "akamaized.net", "akamai.net", "akamaiedge.net",
    "fastly.net", "digicert.com", "letsencrypt.org", "stunprotocol.org", "stunserver.stunprotocol.org",
    "sourceforge.net", "pastebin.com", "dropbox.com", "docker.com", "docker.io",
}

# Signers whose certificate is on ordinary software too (the OS, browsers, antivirus, games, chat,
# office suites): a process signed by them is not thereby a remote-access tool. ".NET" and
# "Certification Authority" are not publishers at all.
GENERIC_SIGNERS = {
    ".net", "certification authority", "microsoft corporation", "microsoft windows component publisher",
    "google llc", "adobe systems incorporated", "rare ideas, llc", "oculus vr, llc", "symantec corporation",
    "tencent technology (shenzhen) company limited", "taobao (china) software co.,ltd.",
    "alibaba (china) network technology co.,ltd.", "yandex llc", "openvpn inc.", "rocket software, inc.",
    "quest software inc.", "tuxera inc", "unity technologies aps", "北京火绒网络科技有限公司", "gametop pte ltd",
    "outbyte computing pty ltd", "eset, spol. s r.o.", "zoho corporation private limited",
}

# Windows' environment folders, as a path written by an installer names them.
ENV_FOLDERS = {
    "%programfiles%": "?:/program files", "%programfiles(x86)%": "?:/program files (x86)",
    "%programdata%": "?:/programdata", "%windir%": "?:/windows", "%systemroot%": "?:/windows",
    "%appdata%": "?:/users/*/appdata/roaming", "%localappdata%": "?:/users/*/appdata/local",
    "%temp%": "?:/users/*/appdata/local/temp", "%userprofile%": "?:/users/*", "%systemdrive%": "?:",
}

# Facts LOLRMM lacks (mostly Linux and macOS process, unit and launchd names), each from the
# vendor's own documentation or package (the source beside it). Every entry extends a LOLRMM tool.
VENDOR_FACTS: list[dict[str, Any]] = [
    {"id": "anydesk", "os": ["linux", "darwin"], "processes": ["anydesk", "AnyDesk"], "ports": [7070],
     "services": ["anydesk.service", "com.philandro.anydesk.service"],
     "source": "https://support.anydesk.com/knowledge/firewall (7070: direct connections); "
               "Linux package binary /usr/bin/anydesk and unit anydesk.service, macOS "
               "/Applications/AnyDesk.app/Contents/MacOS/AnyDesk and launch daemon com.philandro.anydesk.service"},
    {"id": "rustdesk", "os": ["linux", "darwin"], "processes": ["rustdesk"], "ports": [21115, 21116, 21117],
     "services": ["rustdesk.service"],
     "source": "https://rustdesk.com/docs/en/self-host/ (ports 21115-21117); binary /usr/bin/rustdesk, "
               "unit rustdesk.service (rustdesk.deb)"},
    {"id": "teamviewer", "os": ["linux", "darwin", "windows"], "processes": ["teamviewerd", "TeamViewer", "TeamViewer_Service"],
     "ports": [5938], "services": ["teamviewerd.service", "com.teamviewer.teamviewer_service"],
     "folders": ["/opt/teamviewer"],
     "source": "https://www.teamviewer.com/en/global/support/knowledge-base/ (ports used by "
               "TeamViewer: 5938); Linux daemon teamviewerd (unit teamviewerd.service) under /opt/teamviewer, "
               "Windows service TeamViewer_Service.exe, macOS launch daemon com.teamviewer.teamviewer_service"},
    {"id": "chrome-remote-desktop", "os": ["linux", "windows"], "processes": ["remoting_host", "chrome-remote-desktop-host"],
     "folders": ["/opt/google/chrome-remote-desktop"],
     "source": "https://support.google.com/chrome/answer/1649523; Linux host "
               "/opt/google/chrome-remote-desktop/chrome-remote-desktop-host, Windows remoting_host.exe"},
    {"id": "vnc", "os": ["linux"], "processes": ["x11vnc", "wayvnc", "vino-server"], "ports": [5900],
     "source": "RFC 6143 (RFB, port 5900+display); x11vnc(1) man page; "
               "https://github.com/any1/wayvnc; GNOME vino"},
    {"id": "xrdp", "name": "xrdp", "os": ["linux"], "processes": ["xrdp", "xrdp-sesman"], "ports": [3389],
     "services": ["xrdp.service", "xrdp-sesman.service"],
     "source": "https://github.com/neutrinolabs/xrdp (xrdp.ini port=3389, xrdp-sesman; Debian package units "
               "xrdp.service and xrdp-sesman.service)"},
    {"id": "parsec", "os": ["linux", "darwin"], "processes": ["parsecd"],
     "source": "https://support.parsec.app/ (parsecd host daemon; sessions run over UDP, so no TCP port)"},
    {"id": "splashtop", "os": ["windows", "darwin"], "processes": ["SRStreamer"],
     "source": "https://support-splashtopbusiness.splashtop.com/ (Splashtop Streamer, SRStreamer)"},
    {"id": "screenconnect", "os": ["windows", "darwin", "linux"], "processes": ["ScreenConnect.ClientService"], "ports": [8041],
     "source": "https://docs.connectwise.com/ConnectWise_Control_Documentation "
               "(access client service ScreenConnect.ClientService; relay port 8041)"},
    {"id": "ngrok", "os": ["linux", "darwin", "windows"], "processes": ["ngrok"], "services": ["ngrok.service"],
     "source": "https://ngrok.com/docs/agent/ (agent binary ngrok; `ngrok service install` adds the ngrok service)"},
    {"id": "tailscale", "os": ["linux", "darwin", "windows"], "processes": ["tailscaled", "tailscale"],
     "services": ["tailscaled.service", "com.tailscale.tailscaled"],
     "source": "https://tailscale.com/kb/1031/install-linux and https://tailscale.com/kb/1065/macos-variants "
               "(daemon tailscaled, unit tailscaled.service, launch daemon com.tailscale.tailscaled)"},
    {"id": "zerotier", "os": ["linux", "darwin", "windows"], "processes": ["zerotier-one"],
     "services": ["zerotier-one.service", "com.zerotier.one"], "ports": [9993],
     "source": "https://docs.zerotier.com/ (service zerotier-one, unit zerotier-one.service, macOS launch "
               "daemon com.zerotier.one; port 9993)"},
    {"id": "cloudflare-tunnel", "os": ["linux", "darwin", "windows"], "processes": ["cloudflared"],
     "services": ["cloudflared.service", "com.cloudflare.cloudflared"],
     "domains": ["argotunnel.com", "cftunnel.com"],
     "source": "https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/ (connector "
               "cloudflared, `cloudflared service install` adds cloudflared.service / com.cloudflare.cloudflared; "
               "the connector reaches region1.v2.argotunnel.com and cftunnel.com)"},
]

ABOUT = (
    "Remote-access, RMM and tunnel tools the farmwatch remote-access probe recognises by process name "
    "(lower case, '.exe' removed), install folder (lower case, '/' separated, '?:' any drive, '*' any "
    "text), service/unit/launchd label (lower case), code-signing subject and relay domain (the domain "
    "and its subdomains) or address. Derived from LOLRMM (https://github.com/magicsword-io/LOLRMM, "
    f"commit {LOLRMM_COMMIT}, Apache-2.0, (c) its contributors) plus vendor-documented facts (each "
    "tool's 'sources'). Generic names, folders, domains and shared signers are dropped (see "
    "deploy/dev/build_rmm_catalog.py). kind: 'remote_control' or 'tunnel'. "
    "Rebuild with deploy/dev/build_rmm_catalog.py."
)


def process_key(name: str) -> str:
    """How the probe compares process names: case-insensitive, without a trailing ``.exe``."""
    lowered = name.strip().lower()
    return lowered[:-4] if lowered.endswith(".exe") else lowered


def folder_key(path: str) -> str:
    """How the probe compares folders: lower case, ``/`` separated, any drive letter, no trailing ``/*``."""
    folder = path.strip().strip("\"'").lower().replace("\\", "/")
    for variable, expansion in ENV_FOLDERS.items():
        folder = folder.replace(variable, expansion)
    folder = re.sub(r"%[^%/]*%|<[^>]*>|%", "*", folder)  # other variables and <version>-like placeholders
    folder = re.sub(r"/{2,}", "/", folder)
    folder = re.sub(r"^[a-z]:(?=/|$)", "?:", folder)
    if not folder.startswith(("/", "?:", "*")):
        folder = "*/" + folder  # relative (helpwire-operator/bin/...): anywhere
    return re.sub(r"(/\*?)+$", "", folder)


def _tool_id(stem: str, name: str) -> str:
    return REPORT_IDS.get(stem) or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _usable_name(name: str) -> bool:
    return bool(name) and "*" not in name and not name.endswith((".dll", ".msi", ".zip", ".ese")) and \
        name not in GENERIC_NAMES


def _pe_names(details: dict[str, Any]) -> set[str]:
    names = set()
    for entry in _as_list(details.get("PEMetadata")):
        for key in ("Filename", "OriginalFileName"):
            value = entry.get(key)
            if value and _usable_name(process_key(value)):
                names.add(process_key(value))
    return names


def _specific_folder(folder: str) -> bool:
    """A folder that names something: not a system folder (on any drive or under a wildcard), and
    more than wildcards and a drive."""
    bare = folder.lstrip("*?:/")
    if bare.endswith("/*") or any(g.lstrip("?:/") == bare for g in GENERIC_FOLDERS):
        return False
    fixed = [part for part in folder.split("/") if part not in ("?:", "*", "")]
    return any(len(part.strip("*")) > 2 for part in fixed)


def _from_path(raw: str, facts: dict[str, set[str]]) -> None:
    """Executable names, folders and service names in one ``InstallationPaths`` entry."""
    path = folder_key(raw) if ("/" in raw or "\\" in raw) else raw.strip().lower()
    if "/" not in path:  # a bare file name
        if _usable_name(process_key(path)):
            facts["processes"].add(process_key(path))
        return
    folder, _, last = path.rpartition("/")
    if last.endswith(".service"):  # a systemd unit file
        facts["services"].add(last)
    elif last.endswith(".plist") and "launch" in folder:  # a launchd job: its label is the file name
        facts["services"].add(last[:-6])
    elif last.endswith(".app") or raw.rstrip().endswith(("\\", "/", "*")) or "." not in last:
        # A folder (a macOS bundle, a trailing separator or wildcard) or an extensionless Unix file.
        is_file = "." not in last and not raw.rstrip().endswith(("\\", "/", "*")) and folder in GENERIC_FOLDERS
        if is_file:
            if _usable_name(last):
                facts["processes"].add(last)
        elif _specific_folder(path):
            facts["folders"].add(path)
        return
    else:
        if last.endswith(".exe") and _usable_name(process_key(last)):
            facts["processes"].add(process_key(last))
    folder = folder_key(folder)
    if _specific_folder(folder):
        facts["folders"].add(folder)


def _domain(raw: str) -> tuple[str, str] | None:
    """("domain", suffix) or ("address", ip) for one ``Artifacts.Network`` entry, or None when unusable."""
    text = raw.strip().lower()
    text = re.sub(r"^[a-z]+://", "", text).split("/")[0]
    if " " in text or "<" in text or "_" in text.split(".")[-1] or "." not in text:
        return None  # placeholders: user_managed, <on-prem-master-server-host>
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    try:
        return ("address", str(ipaddress.ip_address(host)))
    except ValueError:
        pass
    labels = host.split(".")
    # Keep the fixed part after the last label with a wildcard or regex (relay-[a-f0-9]{8}.net.anydesk.com).
    fixed = [label for label in labels if not re.search(r"[*\[\]{}()?+|\\^$]", label)]
    while len(fixed) < len(labels):
        labels = labels[1:]
    fixed = labels
    suffix = ".".join(fixed)
    generic = suffix in GENERIC_DOMAINS or (len(fixed) < 2)
    wild = host != suffix and (suffix in GENERIC_DOMAINS or any(suffix.endswith("." + g) for g in GENERIC_DOMAINS))
    if generic or wild or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*\.[a-z]{2,}", suffix):
        return None
    return ("domain", suffix)


def _services(entry: dict[str, Any]) -> set[str]:
    artifacts = entry.get("Artifacts") or {}
    names = {str(e["ServiceName"]) for e in _as_list(artifacts.get("EventLog")) if e.get("ServiceName")}
    names |= {str(o["Value"]) for o in _as_list(artifacts.get("Other")) if o.get("Type") == "Service"}
    return {n.strip().lower() for n in names if "*" not in n and n.strip().lower() not in GENERIC_NAMES}


def _signers(entry: dict[str, Any]) -> set[str]:
    signing = entry.get("CodeSigning") or {}
    names = set(_as_list(signing.get("signer_names")))
    names |= {c.get("signer_name") for c in _as_list(signing.get("certificates")) if isinstance(c, dict)}
    cleaned = {str(n).strip().rstrip("\\").strip() for n in names if n}
    return {n for n in cleaned if n and n != "N/A" and n.lower() not in GENERIC_SIGNERS}


def _os_names(details: dict[str, Any]) -> set[str]:
    aliases = {"mac": "darwin", "macos": "darwin", "windows": "windows", "linux": "linux"}
    return {aliases[o.lower()] for o in details.get("SupportedOS") or [] if o.lower() in aliases}


def _read(source: Path) -> dict[str, dict[str, Any]]:
    """LOLRMM's entries merged by tool id (LOLRMM lists some tools in several files)."""
    tools: dict[str, dict[str, Any]] = {}
    for path in sorted(source.glob("*.y*ml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        details = entry.get("Details") or {}
        artifacts = entry.get("Artifacts") or {}
        tool_id = _tool_id(path.stem, entry["Name"])
        tool = tools.setdefault(tool_id, {
            "name": entry["Name"], "category": entry.get("Category") or "RMM",
            "kind": "tunnel" if tool_id in TUNNELS else "remote_control", "website": "",
            "os": set(), "ports": set(), "addresses": set(), "sources": [],
            **{fact: set() for fact in FACTS},
        })
        tool["website"] = tool["website"] or str(details.get("Website") or "")
        tool["os"] |= _os_names(details)
        tool["processes"] |= _pe_names(details)
        for raw in _as_list(details.get("InstallationPaths")) + _as_list(artifacts.get("InstallationPaths")):
            _from_path(str(raw), tool)
        tool["services"] |= _services(entry)
        tool["signers"] |= _signers(entry)
        for network in _as_list(artifacts.get("Network")):
            tool["ports"].update(p for p in _as_list(network.get("Ports")) if isinstance(p, int))
            for raw in _as_list(network.get("Domains")):
                found = _domain(str(raw))
                if found:
                    tool["domains" if found[0] == "domain" else "addresses"].add(found[1])
        tool["sources"].append(f"lolrmm:yaml/{path.name}")
    return tools


def _merge_duplicates(tools: dict[str, dict[str, Any]]) -> None:
    """LOLRMM lists some tools twice under two names (Quick Assist and Microsoft Quick Assist, NinjaOne
    and NinjaRMM); entries with the same website page are one tool, under the shorter id."""
    by_site: dict[str, list[str]] = defaultdict(list)
    for tool_id, tool in tools.items():
        site = re.sub(r"^[a-z]+://(www\.)?", "", tool["website"].lower()).rstrip("/")
        if site and site not in DISTINCT_PRODUCTS_SITES:
            by_site[site].append(tool_id)
    for same in by_site.values():
        keep, *others = sorted(same, key=lambda tool_id: (len(tool_id), tool_id))
        for other in others:
            merged = tools.pop(other)
            for key, value in merged.items():
                if isinstance(value, set):
                    tools[keep][key] |= value
            tools[keep]["sources"] += merged["sources"]


def _letters(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _affinity(fact: str, tool_id: str, tool: dict[str, Any]) -> bool:
    """True when ``fact`` carries the tool's own name or website (splashtop.com for Splashtop)."""
    site = re.sub(r"^[a-z]+://(www\.)?", "", tool["website"].lower()).split("/")[0]
    marks = {_letters(site.rsplit(".", 2)[-2]) if site.count(".") >= 1 else "", _letters(tool_id.split("-")[0])}
    return any(len(mark) > 3 and mark in _letters(fact) for mark in marks)


def _settle_shared(tools: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Give each fact several tools claim to the one it names, or to none; counts what was dropped."""
    dropped: dict[str, int] = defaultdict(int)
    for fact in (*FACTS, "addresses"):
        claims: dict[str, list[str]] = defaultdict(list)
        for tool_id, tool in tools.items():
            for value in tool[fact]:
                claims[value.lower()].append(tool_id)
        for value, claimants in claims.items():
            if len(claimants) < 2:
                continue
            own = sorted(t for t in claimants if _affinity(value, t, tools[t]))
            keep = own[0] if own else None
            for tool_id in claimants:
                if tool_id != keep:
                    tools[tool_id][fact] = {v for v in tools[tool_id][fact] if v.lower() != value}
            dropped[fact] += keep is None
    _settle_nested_domains(tools)
    return dropped


def _settle_nested_domains(tools: dict[str, dict[str, Any]]) -> None:
    """Drop a domain from a tool when it lies under another tool's own domain (Tactical RMM lists
    login.tailscale.com, which is Tailscale's): the longest catalogued suffix wins at match time."""
    owner = {domain: tool_id for tool_id, tool in tools.items() for domain in tool["domains"]}
    for tool_id, tool in tools.items():
        for domain in sorted(tool["domains"]):
            labels = domain.split(".")
            parents = {owner.get(".".join(labels[i:])) for i in range(1, len(labels) - 1)} - {None, tool_id}
            if any(_affinity(domain, p, tools[p]) for p in parents if p) and not _affinity(domain, tool_id, tool):
                tool["domains"].discard(domain)


def build(source: Path) -> dict[str, Any]:
    """The catalogue as a JSON-ready dict: every LOLRMM tool with at least one way to recognise it."""
    tools = _read(source)
    lolrmm_tools = len(tools)
    _merge_duplicates(tools)
    for extra in VENDOR_FACTS:
        tool = tools[extra["id"]]  # every vendor addition extends a LOLRMM tool
        tool["os"] |= set(extra["os"])
        tool["processes"] |= {process_key(p) for p in extra.get("processes", [])}
        tool["services"] |= {s.lower() for s in extra.get("services", [])}
        tool["folders"] |= {folder_key(f) for f in extra.get("folders", [])}
        tool["domains"] |= set(extra.get("domains", []))
        tool["ports"] |= set(extra.get("ports", []))
        tool["sources"].append(extra["source"])
    dropped = _settle_shared(tools)
    listed = []
    for tool_id, t in sorted(tools.items()):
        ways = {fact: sorted(t[fact]) for fact in (*FACTS, "addresses") if t[fact]}
        if not ways:
            continue
        listed.append({"id": tool_id, "name": t["name"], "category": t["category"], "kind": t["kind"],
                       "os": sorted(t["os"]), **ways, "ports": sorted(t["ports"]), "sources": t["sources"]})
    return {"about": ABOUT, "license": "Apache-2.0", "lolrmm_commit": LOLRMM_COMMIT,
            "lolrmm_files": len(list(source.glob("*.y*ml"))),
            "lolrmm_tools": lolrmm_tools, "distinct_tools": len(tools), "shared_facts_dropped": dict(sorted(dropped.items())), "tools": listed}


def render(catalog: dict[str, Any]) -> str:
    """JSON with one tool per line, so a catalogue update reads as a small diff."""
    head = {key: value for key, value in catalog.items() if key != "tools"}
    lines = [json.dumps(tool, ensure_ascii=False) for tool in catalog["tools"]]
    return json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "tools": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def coverage(catalog: dict[str, Any]) -> str:
    """A Markdown table: how many catalogue tools each way of recognising covers, against LOLRMM's total."""
    ways = {"name": "processes", "install folder (path)": "folders", "signer": "signers",
            "service / unit / launchd label": "services", "relay domain or address": ("domains", "addresses")}
    total = catalog["distinct_tools"]
    rows = ["| recognised by | tools | of LOLRMM's |", "| --- | --- | --- |"]
    for label, keys in ways.items():
        keys = (keys,) if isinstance(keys, str) else keys
        count = sum(1 for tool in catalog["tools"] if any(tool.get(k) for k in keys))
        rows.append(f"| {label} | {count} | {total} |")
    rows.append(f"| any of these | {len(catalog['tools'])} | {total} |")
    return "\n".join(rows) + (
        f"\n\nLOLRMM commit {catalog['lolrmm_commit']}: {catalog['lolrmm_files']} files, {catalog['lolrmm_tools']} "
        f"tool names, {total} distinct tools once entries sharing a website page are merged.\n")


def main(argv: list[str]) -> int:
    show_coverage = "--coverage" in argv
    args = [a for a in argv if a != "--coverage"]
    source = Path(args[0]) if args else DEFAULT_SOURCE
    out = Path(args[1]) if len(args) > 1 else DEFAULT_OUT
    catalog = build(source)
    if show_coverage:
        print(coverage(catalog), end="")
        return 0
    out.write_text(render(catalog), encoding="utf-8")
    print(f"{out}: {len(catalog['tools'])} of {catalog['distinct_tools']} LOLRMM tools, "
          + ", ".join(f"{sum(len(t.get(f, [])) for t in catalog['tools'])} {f}" for f in (*FACTS, "addresses")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
