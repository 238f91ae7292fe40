"""``farmwatch-detect``: score an export of ingest records offline, one verdict per device."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from datetime import datetime, timezone
from pathlib import Path

import orjson

from farmwatch.detectors.config import DetectionConfig
from farmwatch.detectors.frame import RecordError, paused_gc
from farmwatch.detectors.shards import FileReading, cpus
from farmwatch.errors import FarmwatchError
from farmwatch.times import parse_utc

DESCRIPTION = """\
Score an export of ingest records (what `farmwatch-collector export` writes: one JSON object per
line) against the HR/IT roster, and write one verdict per device as JSON lines: its risk (0..1),
clear | review | farm, and every finding that moved the risk, each with its evidence.
The collector serves verdicts computed by the same code."""

EPILOG = """\
example:
  farmwatch-detect records.jsonl --roster roster.csv --anchors anchors.csv --out verdicts.jsonl \
      --corporate-network 198.51.100.0/24
exit status: 0 scored; 2 bad input (the message names the file and line)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="farmwatch-detect",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("records", type=Path, metavar="RECORDS.jsonl", help="ingest records, JSON lines")
    parser.add_argument("--roster", type=Path, required=True, metavar="ROSTER.csv",
                        help="device_id,employee_id,country,city,latitude,longitude,timezone,approved_tools")
    parser.add_argument("--anchors", type=Path, metavar="ANCHORS.csv",
                        help="name,address,port,latitude,longitude of the latency anchors (optional)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write verdicts here instead of stdout")
    parser.add_argument("--now", metavar="TIME",
                        help="score as of this RFC 3339 time (default: the current time)")
    parser.add_argument("--corporate-network", action="append", default=[], metavar="CIDR", type=_cidr,
                        help="the company's own egress range (offices, corporate VPN), as in the collector's "
                             "[geo] corporate_networks; repeat for several")
    parser.add_argument("--workers", type=_positive, default=cpus(), metavar="N",
                        help="read and reduce the records in N processes, which take parts of the file "
                             "(at least 1 MiB each) in turn, then share the detectors among N processes (each "
                             "detector runs once, on all the records; where the system cannot fork, in this "
                             "one); default: the CPUs this process may use, here %(default)s; 1: one process")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a number of processes (1 or more): {text!r}")
    return number


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address range such as 198.51.100.0/24: {text!r}") from None


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(timezone.utc)
    try:
        return parse_utc(text)
    except ValueError as problem:
        raise RecordError(f"--now: {problem}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        now = _now(args.now)
        config = DetectionConfig(corporate_networks=tuple(args.corporate_network))
        with paused_gc(), FileReading(args.records, args.workers) as reading:
            # Imported here, while the other processes already read (they fork as FileReading is
            # made, so they do not wait for these): the detectors' libraries (scikit-learn, scipy:
            # about 1 s of CPU) and the roster's and verdicts' models (pydantic: about 0.25 s); this
            # process then takes fewer parts of the file. A bad roster still stops the run before
            # any verdict, and the reading with it.
            from farmwatch.contract import to_wire
            from farmwatch.detectors.pipeline import score_frames
            from farmwatch.roster import load_anchors, load_roster

            roster = load_roster(args.roster)
            anchors = load_anchors(args.anchors) if args.anchors else []
            verdicts = score_frames(reading.frames(), roster, anchors, now, config, processes=args.workers)
    except FarmwatchError as problem:  # RecordError, the roster's TableError: bad input, named
        print(f"farmwatch-detect: {problem}", file=sys.stderr)
        return 2
    lines = b"".join(orjson.dumps(to_wire(verdict)) + b"\n" for verdict in verdicts)
    if args.out:
        try:
            args.out.write_bytes(lines)
        except OSError as failure:
            print(f"farmwatch-detect: {args.out}: cannot be written ({failure.strerror})", file=sys.stderr)
            return 2
    else:
        sys.stdout.buffer.write(lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
