"""Remote-access software with a live session: the farm's way in (ATT&CK T1219).

Reads the ``tools`` frame (one row per connection of a catalogued tool) and scores, per device and
tool: a live (ESTABLISHED) connection; whether the laptop is being *controlled* (an inbound peer or
injected input during the session) rather than controlling something else (an employee reaching
their own desktop: outbound only, local input); the registry country of a direct peer (a relay's
says nothing about the operator); a first-seen tool (Elastic's "First Time Seen Remote Monitoring
and Management Tool" new-terms idea); several vendors on one host (Elastic's "Multiple Remote
Management Tool Vendors on Same Host"); sessions outside the employee's hours. Inbound RDP/VNC
sessions (the OS's own remote desktop) count as a tool named after their kind.

How the agent recognised the tool weighs too (``matched_by``): a tool found only by its install
folder, signer or service, not by its own name, was renamed or is unknown by that name; one found
talking to a catalogued relay domain under another name is the disguise a farm operator would use,
and scores more than the vendor's own binary doing the same. Tunnels and overlay networks (the
catalogue's ``kind: tunnel``: ngrok, Tailscale, ZeroTier, Cloudflare Tunnel …) make the laptop
reachable rather than drive its screen, so they score a share of what interactive remote control
does. A tool the roster approves for the device (the helpdesk's) scores a quarter as much, however
the agent recognised it.

A connection the agent's socket watcher saw begin and end inside one window (``state`` ``CLOSED``)
was a live session as much as one still open at the window's end (the frame's ``live``).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import pandas as pd

from farmwatch.agent.probes.remote_access.catalog import catalog
from farmwatch.contract import RosterEntry
from farmwatch.detectors.base import Context, DeviceFinding, Detector
from farmwatch.detectors.clock import local_times, outside_working_time
from farmwatch.detectors.frame import Frames
from farmwatch.detectors.networks import peer_country

# How people write the catalogue ids (vendor product names).
DISPLAY_NAMES = {
    "anydesk": "AnyDesk",
    "teamviewer": "TeamViewer",
    "rustdesk": "RustDesk",
    "chrome-remote-desktop": "Chrome Remote Desktop",
    "vnc": "VNC",
    "parsec": "Parsec",
    "screenconnect": "ScreenConnect",
    "splashtop": "Splashtop",
    "xrdp": "xrdp",
    "rdp": "Remote Desktop (RDP)",
    "x11": "X11 forwarding",
}


def display_name(tool: str, process: str | None = None) -> str:
    """The product name for a catalogue id; the process name (without .exe) for unknown ids."""
    if tool in DISPLAY_NAMES:
        return DISPLAY_NAMES[tool]
    if process:
        return process.removesuffix(".exe")
    return tool


@lru_cache(maxsize=65536)
def is_public(address: str) -> bool:
    """True for a globally routable peer (a LAN or loopback peer is someone in the building)."""
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


class RemoteAccessDetector(Detector):
    """Unapproved remote-access tools holding live sessions, scored by how controlled the laptop looks."""

    name = "remote_access"
    group = "remote_control"
    attack = "T1219"

    def __init__(
        self,
        running: float = 0.05,
        outbound_session: float = 0.2,
        controlled_session: float = 0.55,
        public_inbound: float = 0.15,
        foreign_peer: float = 0.1,
        several_vendors: float = 0.1,
        first_seen: float = 0.05,
        outside_hours: float = 0.1,
        approved_factor: float = 0.25,
        baseline_hours: float = 24.0,
        unnamed: float = 0.1,
        unnamed_relay: float = 0.2,
        tunnel_factor: float = 0.6,
    ) -> None:
        self.running = running
        self.outbound_session = outbound_session
        self.controlled_session = controlled_session
        self.public_inbound = public_inbound
        self.foreign_peer = foreign_peer
        self.several_vendors = several_vendors
        self.first_seen = first_seen
        self.outside_hours = outside_hours
        self.approved_factor = approved_factor
        self.baseline_hours = baseline_hours
        self.unnamed = unnamed
        self.unnamed_relay = unnamed_relay
        self.tunnel_factor = tunnel_factor

    def detect(self, frames: Frames, context: Context) -> list[DeviceFinding]:
        tools = pd.concat([frames.tools, _session_rows(frames)], ignore_index=True)
        if tools.empty:
            return []
        reports = frames.reports
        tools = tools.assign(
            time=frames.times(tools),
            injected=reports["injected_events"].fillna(0).to_numpy()[tools["rec"].to_numpy()] > 0,
        )
        device_start = reports.groupby("device_id")["window_end"].min()
        found: list[DeviceFinding] = []
        for device, rows in tools.groupby("device_id", sort=True):
            entry = context.roster.get(str(device))
            approved = set(entry.approved_tools) if entry else set()
            unapproved = sorted(set(rows["tool"].dropna()) - approved)
            for tool, used in rows.groupby("tool", sort=True):
                found.append(
                    self._score_tool(str(device), str(tool), used, tool in approved, unapproved, entry,
                                     device_start[device])
                )
        return found

    def _score_tool(
        self,
        device: str,
        tool: str,
        used: pd.DataFrame,
        approved: bool,
        unapproved: list[str],
        entry: RosterEntry | None,
        device_start: pd.Timestamp,
    ) -> DeviceFinding:
        process = str(used["process"].dropna().iloc[0]) if used["process"].notna().any() else None
        shown = display_name(tool, process)
        live = used[used["live"]]
        inbound = live[live["direction"] == "inbound"]
        public_inbound = [ip for ip in inbound["remote_ip"].unique() if is_public(str(ip))]
        # Direct peers only: a relay's country is the vendor's data centre, not the operator's.
        countries = sorted({c for ip in public_inbound if (c := peer_country(str(ip)))})
        foreign = [c for c in countries if entry is not None and entry.country and c != entry.country]
        live_recs = live.drop_duplicates("rec")
        injected_share = float(live_recs["injected"].mean()) if len(live_recs) else 0.0
        # Reports in which the laptop was being driven: an inbound peer, or injected input.
        driven = live_recs[live_recs["injected"] | live_recs["rec"].isin(inbound["rec"])]
        controlled = not driven.empty
        # Whose hours: the driven reports when there are any (an idle relay link runs all day).
        timed = driven if controlled else live_recs
        local = local_times(timed["time"], entry.timezone if entry else None)
        outside_share = float(outside_working_time(local).mean()) if len(timed) else 0.0
        new_tool = used["time"].min() - device_start >= pd.Timedelta(hours=self.baseline_hours)
        ways = _ways(used)
        tunnel = catalog().kinds.get(tool) == "tunnel"
        # Recognised, but not by its own name: renamed, or running under a name the catalogue lacks.
        unnamed = bool(ways) and "name" not in ways
        relayed_domains = sorted(set(live["domain"].dropna())) if "domain" in live else []
        # Sessions the agent's socket watcher saw begin and end inside one window count as live too.
        ended = live[live["state"].astype(str).str.upper() == "CLOSED"]
        longest = live["duration_seconds"].max() if "duration_seconds" in live else None

        if live.empty:
            score, what = self.running, "ran without a live session"
        elif controlled:
            score = self.controlled_session
            what = (f"held live connections in {len(live_recs)} report(s) and drove this laptop (inbound peer or "
                    f"injected input) in {len(driven)}")
        else:
            score, what = self.outbound_session, f"held a live outbound session in {len(live_recs)} report(s)"
        if len(live):
            score += self.public_inbound * bool(public_inbound)
            score += self.foreign_peer * bool(foreign)
            score += self.outside_hours * (outside_share > 0.5)
        score += self.several_vendors * (len(unapproved) > 1 and not approved)
        score += self.first_seen * bool(new_tool)
        if unnamed and len(live):
            score += self.unnamed_relay if "domain" in ways else self.unnamed
        if tunnel:
            score *= self.tunnel_factor
        if approved:
            score *= self.approved_factor
        path = "direct inbound peer" if len(inbound) else ("relay or outbound peer" if len(live) else "none")
        kind = "tunnel" if tunnel else "remote-access tool"
        found_as = (f", recognised by {' and '.join(sorted(ways))} while running as {process}"
                    if unnamed and process else "")
        summary = (
            f"{'Approved' if approved else 'Unapproved'} {kind} {shown} ({tool}){found_as} {what}"
            + (f", {len(public_inbound)} public inbound peer(s)" if public_inbound else "")
            + (f" registered in {', '.join(countries)}" if countries else "")
            + (f"; {len(ended)} connection(s) ended inside their window" if len(ended) else "")
            + (f"; {outside_share:.0%} of those reports fell outside working hours" if len(timed) else "")
            + "."
        )
        evidence = {
            "tool": tool,
            "name": shown,
            "process": process,
            "approved": approved,
            "session_reports": len(live_recs),
            "driven_reports": len(driven),
            "path": path,
            "inbound_peers": sorted(map(str, inbound["remote_ip"].unique()))[:5],
            "inbound_peer_countries": countries,
            "foreign_peer": bool(foreign),
            "outbound_peers": sorted(map(str, live[live["direction"] == "outbound"]["remote_ip"].unique()))[:5],
            "injected_share_in_session": injected_share,
            "outside_hours_share": outside_share,
            "first_seen_tool": bool(new_tool),
            "unapproved_vendors": unapproved,
            "kind": "tunnel" if tunnel else "remote_control",
            "matched_by": sorted(ways),
            "recognised_without_its_name": unnamed,
            "relay_domains": relayed_domains[:5],
            "ended_in_window_connections": len(ended),
            "longest_session_seconds": None if longest is None or pd.isna(longest) else float(longest),
        }
        span = live if len(live) else used
        return self.finding(device, score, summary, evidence, span["time"].min(), span["time"].max())


def _ways(used: pd.DataFrame) -> set[str]:
    """Every way the agent recognised the tool in these rows (OS sessions have none)."""
    if "matched_by" not in used:
        return set()
    return {way for joined in used["matched_by"].dropna() for way in str(joined).split(";") if way}


def _session_rows(frames: Frames) -> pd.DataFrame:
    """Inbound RDP/VNC/X11 sessions from another machine, shaped like tool connections (the
    operating system's own remote desktop is remote-access software too; ``approved_tools`` may
    name ``rdp``). SSH is left out: developers reach their laptops over SSH without driving the
    screen, and session_distance still weighs a far SSH peer."""
    sessions = frames.sessions
    remote = sessions[sessions["remote_ip"].notna() & sessions["kind"].isin(["rdp", "vnc", "x11"])]
    return pd.DataFrame({
        "rec": remote["rec"], "tool": remote["kind"], "process": None, "remote_ip": remote["remote_ip"],
        "direction": "inbound", "state": remote["state"].fillna("ESTABLISHED"), "min_rtt_ms": remote["min_rtt_ms"],
        "duration_seconds": remote["duration_seconds"], "device_id": remote["device_id"], "live": True,
    })
