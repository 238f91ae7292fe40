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
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from farmwatch.agent.probes.remote_access.catalog import catalog
from farmwatch.contract import RosterEntry
from farmwatch.detectors.base import Context, DeviceFinding, Detector, aggregated_columns, device_ids, device_runs
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
        tools = tools[tools["tool"].notna()]
        if tools.empty:
            return []
        reports = frames.reports
        recs = tools["rec"].to_numpy()
        tools = tools.assign(
            time=frames.times(tools),
            injected=reports["injected_events"].fillna(0).to_numpy()[recs] > 0,
            live=tools["live"].astype(bool),
            device_id=reports["device_code"].to_numpy()[recs],  # grouped on codes, named in _tool_uses
        )
        # Each device's first window: the first of its time-sorted run.
        first, _ = device_runs(reports["device_code"].to_numpy())
        device_start = dict(zip(reports["device_id"].to_numpy()[first], reports["window_end"].array[first]))
        uses = _tool_uses(tools, context, device_ids(reports))
        found: list[DeviceFinding] = []
        for device, device_uses in uses.items():  # sorted by device, then tool
            entry = context.roster.get(device)
            approved = set(entry.approved_tools) if entry else set()
            unapproved = sorted({use.tool for use in device_uses} - approved)
            for use in device_uses:
                found.append(self._score_tool(device, use, use.tool in approved, unapproved, entry,
                                              device_start[device]))
        return found

    def _score_tool(
        self,
        device: str,
        use: ToolUse,
        approved: bool,
        unapproved: list[str],
        entry: RosterEntry | None,
        device_start: pd.Timestamp,
    ) -> DeviceFinding:
        tool, process = use.tool, use.process
        shown = display_name(tool, process)
        public_inbound = [ip for ip in use.inbound_peers if is_public(ip)]
        # Direct peers only: a relay's country is the vendor's data centre, not the operator's.
        countries = sorted({c for ip in public_inbound if (c := peer_country(ip))})
        foreign = [c for c in countries if entry is not None and entry.country and c != entry.country]
        controlled = use.driven_reports > 0
        new_tool = use.first_used - device_start >= pd.Timedelta(hours=self.baseline_hours)
        ways = use.ways
        tunnel = catalog().kinds.get(tool) == "tunnel"
        # Recognised, but not by its own name: renamed, or running under a name the catalogue lacks.
        unnamed = bool(ways) and "name" not in ways
        live = use.live_connections

        if not live:
            score, what = self.running, "ran without a live session"
        elif controlled:
            score = self.controlled_session
            what = (f"held live connections in {use.session_reports} report(s) and drove this laptop (inbound peer "
                    f"or injected input) in {use.driven_reports}")
        else:
            score, what = self.outbound_session, f"held a live outbound session in {use.session_reports} report(s)"
        if live:
            score += self.public_inbound * bool(public_inbound)
            score += self.foreign_peer * bool(foreign)
            score += self.outside_hours * (use.outside_share > 0.5)
        score += self.several_vendors * (len(unapproved) > 1 and not approved)
        score += self.first_seen * bool(new_tool)
        if unnamed and live:
            score += self.unnamed_relay if "domain" in ways else self.unnamed
        if tunnel:
            score *= self.tunnel_factor
        if approved:
            score *= self.approved_factor
        path = "direct inbound peer" if use.inbound_connections else ("relay or outbound peer" if live else "none")
        kind = "tunnel" if tunnel else "remote-access tool"
        found_as = (f", recognised by {' and '.join(sorted(ways))} while running as {process}"
                    if unnamed and process else "")
        summary = (
            f"{'Approved' if approved else 'Unapproved'} {kind} {shown} ({tool}){found_as} {what}"
            + (f", {len(public_inbound)} public inbound peer(s)" if public_inbound else "")
            + (f" registered in {', '.join(countries)}" if countries else "")
            + (f"; {use.ended} connection(s) ended inside their window" if use.ended else "")
            + (f"; {use.outside_share:.0%} of those reports fell outside working hours" if use.timed_reports else "")
            + "."
        )
        evidence = {
            "tool": tool,
            "name": shown,
            "process": process,
            "approved": approved,
            "session_reports": use.session_reports,
            "driven_reports": use.driven_reports,
            "path": path,
            "inbound_peers": sorted(use.inbound_peers)[:5],
            "inbound_peer_countries": countries,
            "foreign_peer": bool(foreign),
            "outbound_peers": sorted(use.outbound_peers)[:5],
            "injected_share_in_session": use.injected_share,
            "outside_hours_share": use.outside_share,
            "first_seen_tool": bool(new_tool),
            "unapproved_vendors": unapproved,
            "kind": "tunnel" if tunnel else "remote_control",
            "matched_by": sorted(ways),
            "recognised_without_its_name": unnamed,
            "relay_domains": use.relay_domains[:5],
            "ended_in_window_connections": use.ended,
            "longest_session_seconds": use.longest_session_seconds,
        }
        return self.finding(device, score, summary, evidence, use.first, use.last)


@dataclass(frozen=True)
class ToolUse:
    """What one device's rows of one tool (connections and OS sessions) add up to."""

    tool: str
    process: str | None  # the first process name reported
    ways: set[str]  # every way the agent recognised it (OS sessions: none)
    first_used: pd.Timestamp  # the earliest report naming it
    live_connections: int  # rows with a live session
    inbound_connections: int
    inbound_peers: list[str]  # distinct peers of live inbound connections
    outbound_peers: list[str]
    relay_domains: list[str]  # sorted catalogued relay domains of live connections
    ended: int  # live connections that ended inside their window
    longest_session_seconds: float | None
    session_reports: int  # reports with a live connection
    driven_reports: int  # of those, driven: an inbound peer or injected input
    timed_reports: int  # the reports whose hours count: the driven ones, else every session report
    injected_share: float  # share of session reports with injected input
    outside_share: float  # share of the timed reports outside the roster zone's working time
    first: pd.Timestamp  # the span of the live rows (of every row without one)
    last: pd.Timestamp


_KEY = "pair"  # one integer per device and tool, see _tool_uses


def _tool_uses(tools: pd.DataFrame, context: Context, ids: np.ndarray) -> dict[str, list[ToolUse]]:
    """Per device (sorted), one :class:`ToolUse` per tool (sorted), aggregated over whole columns
    (grouped by device and tool) rather than device by device. ``tools["device_id"]`` holds device
    codes (numbers group faster than id strings), ``ids`` the id of each code."""
    # Device and tool as one integer, ordered as (device code, tool) sort: grouping on it gives the
    # groups, in the order, of grouping on both (factorizing the text column once, not per groupby).
    tool_codes, tool_names = pd.factorize(tools["tool"], sort=True)
    tools = tools.assign(pair=tools["device_id"].to_numpy().astype(np.int64) * len(tool_names) + tool_codes)
    live = tools[tools["live"].to_numpy()]
    inbound = live[(live["direction"] == "inbound").to_numpy()]
    # One row per report with a live connection of the tool (its first), as the report's facts.
    live_recs = live.drop_duplicates([_KEY, "rec"])
    driven = (live_recs["injected"].to_numpy()
              | pd.MultiIndex.from_frame(live_recs[[_KEY, "rec"]]).isin(
                  pd.MultiIndex.from_frame(inbound[[_KEY, "rec"]])))
    zones = np.array([(entry.timezone or "") if (entry := context.roster.get(device)) is not None else ""
                      for device in ids], dtype=object)
    outside = np.zeros(len(live_recs), dtype=bool)
    zone_of = zones[live_recs["device_id"].to_numpy()]
    for zone in pd.unique(zone_of):
        at = zone_of == zone
        outside[at] = outside_working_time(local_times(live_recs["time"][at], zone or None)).to_numpy()
    recs = pd.DataFrame({_KEY: live_recs[_KEY].to_numpy(), "injected": live_recs["injected"].to_numpy(), "driven": driven,
                         "outside": outside, "outside_driven": outside & driven})
    # Each column's own reduction over one grouping, not named aggregation (aggregated_columns).
    per_rec = aggregated_columns(recs.groupby(_KEY, sort=True), session_reports=("driven", "size"),
                                 driven_reports=("driven", "sum"), injected=("injected", "sum"),
                                 outside=("outside", "sum"), outside_driven=("outside_driven", "sum"))
    used = aggregated_columns(tools.groupby(_KEY, sort=True), process=("process", "first"),
                              first_used=("time", "min"), used_last=("time", "max"))
    live_span = aggregated_columns(live.groupby(_KEY, sort=True), first=("time", "min"), last=("time", "max"),
                                   live_connections=("time", "size"), longest=("duration_seconds", "max"))
    # The state's spellings upper-cased once each, not per row.
    closed = [state for state in pd.unique(live["state"].to_numpy(dtype=object)) if str(state).upper() == "CLOSED"]
    ended = live[live["state"].isin(closed).to_numpy()].groupby(_KEY).size().to_dict()
    inbound_count = inbound.groupby(_KEY).size().to_dict()
    inbound_peers = _distinct(inbound, "remote_ip")
    outbound_peers = _distinct(live[(live["direction"] == "outbound").to_numpy()], "remote_ip")
    domains = _distinct(live, "domain")
    matched = _distinct(tools, "matched_by")
    # Looked up per device and tool below: plain dicts of rows, not a MultiIndex .loc per key.
    counts_of = dict(zip(per_rec.index, per_rec.itertuples(index=False)))
    span_of = dict(zip(live_span.index, live_span.itertuples(index=False)))
    uses: dict[str, list[ToolUse]] = {}
    for key, row in zip(used.index, used.itertuples(index=False)):
        device, tool = str(ids[key // len(tool_names)]), str(tool_names[key % len(tool_names)])
        counts = counts_of.get(key)
        session_reports = int(counts.session_reports) if counts is not None else 0
        driven_reports = int(counts.driven_reports) if counts is not None else 0
        injected = int(counts.injected) if counts is not None else 0
        timed = driven_reports if driven_reports else session_reports
        outside_timed = (0 if counts is None else
                         int(counts.outside_driven if driven_reports else counts.outside))
        span = span_of.get(key)
        longest = None if span is None or pd.isna(span.longest) else float(span.longest)
        uses.setdefault(device, []).append(ToolUse(
            tool=tool, process=None if pd.isna(row.process) else str(row.process),
            ways={way for joined in matched.get(key, ()) for way in str(joined).split(";") if way},
            first_used=row.first_used,
            live_connections=0 if span is None else int(span.live_connections),
            inbound_connections=int(inbound_count.get(key, 0)),
            inbound_peers=[str(ip) for ip in inbound_peers.get(key, ())],
            outbound_peers=[str(ip) for ip in outbound_peers.get(key, ())],
            relay_domains=sorted(set(domains.get(key, ()))),
            ended=int(ended.get(key, 0)),
            longest_session_seconds=longest,
            session_reports=session_reports, driven_reports=driven_reports, timed_reports=timed,
            injected_share=injected / session_reports if session_reports else 0.0,
            outside_share=outside_timed / timed if timed else 0.0,
            first=row.first_used if span is None else span.first,
            last=row.used_last if span is None else span.last,
        ))
    return uses


def _distinct(rows: pd.DataFrame, column: str) -> dict[Any, list[Any]]:
    """Per device and tool (``rows[_KEY]``): the distinct values of ``column`` it has (missing left
    out), in the order they first appear, as ``groupby(_KEY)[column].unique()`` lists them (the
    missing values dropped and the repeats removed on whole columns; only the distinct ones are
    walked in Python: that groupby ran Python code per group)."""
    present = rows[column].notna().to_numpy()
    distinct = rows.loc[present, [_KEY, column]].drop_duplicates()  # keeps each first appearance, in order
    found: dict[Any, list[Any]] = {}
    for key, value in zip(distinct[_KEY].to_numpy(), distinct[column].to_numpy(dtype=object)):
        found.setdefault(key, []).append(value)
    return found


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
