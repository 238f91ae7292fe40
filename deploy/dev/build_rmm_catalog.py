"""Build ``farmwatch/agent/data/rmm_catalog.json`` from the LOLRMM catalogue plus vendor-documented names.

Usage: ``python deploy/dev/build_rmm_catalog.py [LOLRMM_YAML_DIR] [OUT_JSON]``
(defaults: ``../shared/data/lolrmm/yaml`` and ``farmwatch/agent/data/rmm_catalog.json``).

LOLRMM (magicsword-io/LOLRMM, Apache-2.0) gives Windows file names (PEMetadata ``Filename`` /
``OriginalFileName``), supported OSes, network ports and a category per tool. It rarely names the
Linux and macOS processes, so :data:`VENDOR_NAMES` adds those from the vendors' own documentation.
The JSON is committed, so installing the agent needs neither LOLRMM nor PyYAML.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "lolrmm" / "yaml"
DEFAULT_OUT = ROOT / "farmwatch" / "agent" / "data" / "rmm_catalog.json"
LOLRMM_COMMIT = "3c75cf091b10bf7e8ecd576055c44d172b35ff21"

# LOLRMM tool files whose id must be the one report-v1.md names (the rest get a slug of the name).
REPORT_IDS = {"chrome_remote_desktop": "chrome-remote-desktop"}

# Names LOLRMM lists that are not specific to the tool: matching them would flag ordinary machines.
# dwm.exe is Windows' Desktop Window Manager; plink is PuTTY's; the rest are generic
# installer/updater/agent names that many unrelated products use.
GENERIC_NAMES = {
    "agent", "appcore", "autoupdate", "clm", "dwm", "installcore", "installshield setup",
    "notificationhelper", "plink", "recycler", "selfupdater", "setup", "si", "update-shim", "upload",
}

# Linux/macOS (and some Windows) process names and default TCP ports that LOLRMM lacks, each
# from the vendor's own documentation (the URL beside it).
VENDOR_NAMES: list[dict[str, Any]] = [
    {"id": "anydesk", "os": ["linux", "darwin"], "processes": ["anydesk", "AnyDesk"], "ports": [7070],
     "source": "https://support.anydesk.com/knowledge/firewall (7070: direct connections); "
               "Linux package binary /usr/bin/anydesk, macOS /Applications/AnyDesk.app/Contents/MacOS/AnyDesk"},
    {"id": "rustdesk", "os": ["linux", "darwin"], "processes": ["rustdesk"], "ports": [21115, 21116, 21117],
     "source": "https://rustdesk.com/docs/en/self-host/ (ports 21115-21117); binary /usr/bin/rustdesk"},
    {"id": "teamviewer", "os": ["linux", "darwin", "windows"], "processes": ["teamviewerd", "TeamViewer", "TeamViewer_Service"],
     "ports": [5938],
     "source": "https://www.teamviewer.com/en/global/support/knowledge-base/ (ports used by "
               "TeamViewer: 5938); Linux daemon teamviewerd, Windows service TeamViewer_Service.exe"},
    {"id": "chrome-remote-desktop", "os": ["linux", "windows"], "processes": ["remoting_host", "chrome-remote-desktop-host"],
     "ports": [],
     "source": "https://support.google.com/chrome/answer/1649523; Linux host "
               "/opt/google/chrome-remote-desktop/chrome-remote-desktop-host, Windows remoting_host.exe"},
    {"id": "vnc", "os": ["linux"], "processes": ["x11vnc", "wayvnc", "vino-server"], "ports": [5900],
     "source": "RFC 6143 (RFB, port 5900+display); x11vnc(1) man page; "
               "https://github.com/any1/wayvnc; GNOME vino"},
    {"id": "xrdp", "os": ["linux"], "processes": ["xrdp", "xrdp-sesman"], "ports": [3389],
     "source": "https://github.com/neutrinolabs/xrdp (xrdp.ini port=3389, xrdp-sesman)"},
    {"id": "parsec", "os": ["linux", "darwin"], "processes": ["parsecd"], "ports": [],
     "source": "https://support.parsec.app/ (parsecd host daemon; sessions run over UDP, so no TCP port)"},
    {"id": "splashtop", "os": ["windows", "darwin"], "processes": ["SRStreamer"], "ports": [],
     "source": "https://support-splashtopbusiness.splashtop.com/ (Splashtop Streamer, SRStreamer)"},
    {"id": "screenconnect", "os": ["windows", "darwin", "linux"], "processes": ["ScreenConnect.ClientService"], "ports": [8041],
     "source": "https://docs.connectwise.com/ConnectWise_Control_Documentation "
               "(access client service ScreenConnect.ClientService; relay port 8041)"},
]

ABOUT = (
    "Remote-access and RMM tools matched by the farmwatch remote-access probe, by process name "
    "(lower case, '.exe' removed). Derived from LOLRMM (https://github.com/magicsword-io/LOLRMM, "
    f"commit {LOLRMM_COMMIT}, Apache-2.0, (c) its contributors) plus vendor-documented Linux/macOS "
    "names (each tool's 'sources'). Rebuild with deploy/dev/build_rmm_catalog.py."
)


def process_key(name: str) -> str:
    """How the probe compares process names: case-insensitive, without a trailing ``.exe``."""
    lowered = name.strip().lower()
    return lowered[:-4] if lowered.endswith(".exe") else lowered


def _tool_id(stem: str, name: str) -> str:
    return REPORT_IDS.get(stem) or re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _pe_names(details: dict[str, Any]) -> set[str]:
    metadata = details.get("PEMetadata") or []
    entries = [metadata] if isinstance(metadata, dict) else metadata
    names = set()
    for entry in entries:
        for key in ("Filename", "OriginalFileName"):
            value = entry.get(key)
            # Wildcards are installer-name patterns; .dll/.msi never appear as a process name.
            if value and "*" not in value and not value.lower().endswith((".dll", ".msi")):
                names.add(process_key(value))
    return names - GENERIC_NAMES


def _ports(artifacts: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in artifacts.get("Network") or []:
        ports.update(p for p in entry.get("Ports") or [] if isinstance(p, int))
    return ports


def _os_names(details: dict[str, Any]) -> set[str]:
    aliases = {"mac": "darwin", "macos": "darwin", "windows": "windows", "linux": "linux"}
    return {aliases[o.lower()] for o in details.get("SupportedOS") or [] if o.lower() in aliases}


def build(source: Path) -> dict[str, Any]:
    """The catalogue as a JSON-ready dict: tools that have at least one process name."""
    tools: dict[str, dict[str, Any]] = {}
    for path in sorted(source.glob("*.y*ml")):
        entry = yaml.safe_load(path.read_text(encoding="utf-8"))
        details = entry.get("Details") or {}
        tool = tools.setdefault(_tool_id(path.stem, entry["Name"]), {
            "name": entry["Name"], "category": entry.get("Category") or "RMM",
            "os": set(), "processes": set(), "ports": set(), "sources": [],
        })
        tool["os"] |= _os_names(details)
        tool["processes"] |= _pe_names(details)
        tool["ports"] |= _ports(entry.get("Artifacts") or {})
        tool["sources"].append(f"lolrmm:yaml/{path.name}")
    for extra in VENDOR_NAMES:
        tool = tools[extra["id"]]  # every vendor addition extends a LOLRMM tool
        tool["os"] |= set(extra["os"])
        tool["processes"] |= {process_key(p) for p in extra["processes"]}
        tool["ports"] |= set(extra["ports"])
        tool["sources"].append(extra["source"])
    owners: dict[str, str] = {}
    for tool_id, tool in tools.items():
        for process in tool["processes"]:
            if owners.setdefault(process, tool_id) != tool_id:
                raise SystemExit(f"process name {process!r} claimed by {owners[process]} and {tool_id}")
    listed = [
        {"id": tool_id, "name": t["name"], "category": t["category"], "os": sorted(t["os"]),
         "processes": sorted(t["processes"]), "ports": sorted(t["ports"]), "sources": t["sources"]}
        for tool_id, t in sorted(tools.items()) if t["processes"]
    ]
    return {"about": ABOUT, "license": "Apache-2.0", "tools": listed}


def render(catalog: dict[str, Any]) -> str:
    """JSON with one tool per line, so a catalogue update reads as a small diff."""
    head = {key: value for key, value in catalog.items() if key != "tools"}
    lines = [json.dumps(tool, ensure_ascii=False) for tool in catalog["tools"]]
    return json.dumps(head, indent=1)[:-2] + ',\n "tools": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    catalog = build(source)
    out.write_text(render(catalog), encoding="utf-8")
    print(f"{out}: {len(catalog['tools'])} tools, "
          f"{sum(len(t['processes']) for t in catalog['tools'])} process names")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
