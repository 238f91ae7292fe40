"""``farmwatch-simulate``: a seeded company fleet over days, as the files the detectors read."""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson

from farmwatch.simulator.fleet import Device, make_fleet
from farmwatch.simulator.places import ANCHORS
from farmwatch.simulator.records import Simulator
from farmwatch.simulator.shared_egress import apply_shared_egress
from farmwatch.simulator.tactics import TACTICS, apply_tactic

DESCRIPTION = """\
Simulate a company's laptop fleet over several days: legitimate employees with the confounders real
fleets have (helpdesk sessions, travellers, couples, coworking, offices, corporate VPN, macros, desk
KVMs, night owls, bilingual staff) and laptop farms of every kind (RMM direct or relayed, RDP over a
VPN, IP-KVMs with default or spoofed identities, single-laptop facilitators, farms whose laptops each
have their own line). Writes records.jsonl (ingest records), roster.csv, anchors.csv and labels.csv
(the truth: legit|farm and the kind) into --out. The same seed gives the same files."""

EPILOG = """\
example:
  farmwatch-simulate --out /tmp/fleet --seed 7 --legit 170 --farms 36 --days 5
  farmwatch-detect /tmp/fleet/records.jsonl --roster /tmp/fleet/roster.csv --anchors /tmp/fleet/anchors.csv"""


@dataclass(frozen=True)
class FleetFiles:
    records: Path
    roster: Path
    anchors: Path
    labels: Path
    count: int


def write_fleet(out: Path, seed: int, legit: int, farms: int, days: int, limit: int | None = None,
                stealthy: bool = False, shared_egress: bool = False, tactics: tuple[str, ...] = ()) -> FleetFiles:
    """Simulate and write the four files; ``limit`` stops after that many records; ``shared_egress``
    applies :func:`farmwatch.simulator.shared_egress.apply_shared_egress` to the fleet, ``tactics``
    each named :func:`farmwatch.simulator.tactics.apply_tactic` after it."""
    out.mkdir(parents=True, exist_ok=True)
    devices = make_fleet(seed, legit, farms, days, stealthy)
    if shared_egress:
        apply_shared_egress(devices, seed)
    for tactic in tactics:
        apply_tactic(devices, tactic, seed, days)
    simulator = Simulator(seed, days)
    files = FleetFiles(out / "records.jsonl", out / "roster.csv", out / "anchors.csv", out / "labels.csv", 0)
    count = 0
    with files.records.open("wb") as handle:
        for index, device in enumerate(devices):
            lines = [orjson.dumps(record) for record in simulator.records(device, index)]
            if limit is not None:
                lines = lines[: limit - count]
            handle.write(b"\n".join(lines) + (b"\n" if lines else b""))
            count += len(lines)
            if limit is not None and count >= limit:
                break
    _write_csv(files.roster, ["device_id", "employee_id", "country", "city", "latitude", "longitude", "timezone",
                              "approved_tools"], [_roster_row(d) for d in devices])
    _write_csv(files.anchors, ["name", "address", "port", "latitude", "longitude"], [list(a) for a in ANCHORS])
    _write_csv(files.labels, ["device_id", "label", "kind"], [[d.device_id, d.label, d.kind] for d in devices])
    return FleetFiles(files.records, files.roster, files.anchors, files.labels, count)


def _roster_row(device: Device) -> list[object]:
    city = device.claimed
    return [device.device_id, device.employee_id, city.country, city.name, city.latitude, city.longitude,
            city.timezone, ";".join(device.approved_tools)]


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="farmwatch-simulate", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the four files")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--legit", type=_positive, default=170, help="legitimate devices (default 170)")
    parser.add_argument("--farms", type=_positive, default=36, help="farm devices (default 36)")
    parser.add_argument("--days", type=_positive, default=5, help="days simulated, from a Monday (default 5)")
    parser.add_argument("--limit", type=_positive, help="stop after this many records")
    parser.add_argument("--stealthy", action="store_true",
                        help="farms hide every way the simulator knows (a stress test, not typical farms)")
    parser.add_argument("--shared-egress", action="store_true",
                        help="put some employees behind carrier-grade NAT or a consumer VPN (strangers sharing "
                             "public addresses), some farms behind 5G home internet or agents without LAN "
                             "identities; labels.csv marks each converted device's kind")
    parser.add_argument("--tactic", action="append", default=[], choices=sorted(TACTICS), metavar="NAME",
                        help="a tactic farms move to, with the confounders it meets (repeatable): tampering "
                             "(agents stopped, reinstalled, restored; IT reimages, upgrades, full disks), vps-hop "
                             "(operators behind a VPS in the country), kvm-reflashed (IP-KVMs with generic USB "
                             "and capture-dongle or re-flashed EDID identities, pasted typing), in-city (laptops "
                             "kept in the claimed city); labels.csv marks each touched device's kind")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    try:
        files = write_fleet(args.out, args.seed, args.legit, args.farms, args.days, args.limit, args.stealthy,
                            args.shared_egress, tuple(dict.fromkeys(args.tactic)))
    except OSError as failure:
        print(f"farmwatch-simulate: {args.out}: {failure.strerror or failure}", file=sys.stderr)
        return 2
    print(f"wrote {files.count} records for {args.legit} legitimate and {args.farms} farm devices to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
