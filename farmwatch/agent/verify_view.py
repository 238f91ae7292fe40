"""What ``farmwatch-agent verify`` shows a person: a progress bar while it observes, what this
laptop showed (from the report it sent), and the collector's answer in plain words with what to do.

The collector answers a device token with the verdict label only (its reasons stay with the
security team), so the laptop's own observations are what the person sees as the "why".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

BAR_WIDTH = 30
ADVICE = {
    "clear": "Nothing suggests this laptop is driven from elsewhere. File this result with the onboarding "
             "paperwork.",
    "review": "Something here needs a second look. Do not grant access yet: send this output to the security "
              "team, who can see the detailed reasons.",
    "farm": "This laptop looks remotely controlled or kept away from its user. Do not grant access: hand it "
            "to the security team now.",
}
HEADLINE = {"clear": "CLEAR", "review": "NEEDS REVIEW", "farm": "LIKELY LAPTOP FARM"}


class Progress:
    """A bar with the seconds left, redrawn in place on a terminal, one line per 10 s elsewhere."""

    def __init__(self, out: TextIO, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.out = out
        self.clock = clock
        self.sleep = sleep

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass, showing how many are left."""
        start = self.clock()
        live = self.out.isatty()
        shown = None
        while (left := seconds - (self.clock() - start)) > 0:
            whole = int(left + 0.999)
            if live or shown is None or shown - whole >= 10:
                done = int(BAR_WIDTH * (seconds - left) / seconds) if seconds else BAR_WIDTH
                line = f"  observing [{'#' * done}{'.' * (BAR_WIDTH - done)}] {whole:4d} s left"
                self.out.write(("\r" + line) if live else line + "\n")
                self.out.flush()
                shown = whole
            self.sleep(min(1.0, left))
        self.out.write(("\r" if live else "") + f"  observed  [{'#' * BAR_WIDTH}] {seconds:.0f} s\n")
        self.out.flush()


def observations(report: dict[str, Any]) -> list[str]:
    """One plain line per part of the report: what each probe found on this laptop."""
    lines = []
    tools = report.get("remote_access") or []
    if tools:
        for tool in tools:
            connections = tool.get("connections") or []
            links = [f"{c['direction']} {c['remote_ip']}:{c['remote_port']}{_rtt(c)}{_ended(c)}" for c in connections]
            # Only connections that ended inside the window: the watcher saw it, it may have exited since.
            seen = connections and all(c.get("state") == _CLOSED for c in connections)
            lines.append(f"remote-access tool {tool['process']} ({tool['tool']}) {'was seen' if seen else 'is running'}"
                         + (f", connected: {'; '.join(links)}" if links else ", with no connection"))
    else:
        lines.append("no remote-access tool is running")
    sessions = report.get("sessions") or []
    lines.append("remote sessions: " + ("; ".join(f"{s['kind']} from {s.get('remote_ip') or 'this console'}{_rtt(s)}"
                                                   f"{_ended(s)}" for s in sessions) if sessions else "none"))
    network = report.get("network") or {}
    kinds = sorted({f"{i['kind']} ({i['vpn_product']})" if i.get("vpn_product") else i["kind"]
                    for i in network.get("interfaces") or [] if i["kind"] != "loopback"})
    anchors = [f"{p['target']} {p['rtt_min_ms']:.0f} ms" for p in network.get("probes") or [] if p.get("rtt_min_ms") is not None]
    lines.append(f"network: {', '.join(kinds) or 'no interface seen'}"
                 + (f"; company anchors answered in {', '.join(anchors)}" if anchors else ""))
    timing = report.get("input") or {}
    if timing:
        extra = [f"{timing['injected_events']} injected events"] if timing.get("injected_events") else []
        extra += [f"virtual input devices {', '.join(timing['virtual_devices'])}"] if timing.get("virtual_devices") else []
        lines.append(f"keyboard and mouse: active {timing.get('active_seconds', 0):.0f} s"
                     + (f"; {'; '.join(extra)}" if extra else "; no injected input"))
    hardware = report.get("hardware") or {}
    if hardware:
        lines.append(f"hardware: {len(hardware.get('usb') or [])} USB devices, "
                     f"{len(hardware.get('displays') or [])} display(s)")
    for error in report.get("errors") or []:
        lines.append(f"could not check {error['probe']}: {error['message']}")
    return lines


_CLOSED = "CLOSED"  # a connection or session that ended inside the window (the agent's socket watcher)


def _ended(connection: dict[str, Any]) -> str:
    if connection.get("state") != _CLOSED:
        return ""
    lasted = connection.get("duration_seconds")
    return f" (ended after {lasted:.0f} s)" if lasted is not None else " (ended)"


def _rtt(connection: dict[str, Any]) -> str:
    rtt = connection.get("min_rtt_ms", connection.get("rtt_ms"))
    return f" (round trip {rtt:.0f} ms)" if rtt is not None else ""


def result(verdict: str) -> list[str]:
    """The verdict headline and what to do next."""
    return [f"Result: {HEADLINE[verdict]}", f"What to do next: {ADVICE[verdict]}"]
