"""``farmwatch-collector``: run the collector, export what it stored, load the roster and anchors.

Every expected failure (missing file, bad CSV row, unknown device, unusable database) prints one
line naming the problem and exits 1; usage mistakes exit 2 (argparse).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from farmwatch.collector.alert_commands import add_commands as add_alert_commands
from farmwatch.collector.command_support import CommandError, database_url, db_flag, open_existing, parse_since
from farmwatch.collector.config import load_config
from farmwatch.collector.console.cli import add_commands as add_console_commands
from farmwatch.collector.db_commands import add_commands as add_db_commands
from farmwatch.collector.purge import purge_device
from farmwatch.collector.storage import Storage
from farmwatch.errors import FarmwatchError
from farmwatch.roster import ANCHOR_COLUMNS, ROSTER_COLUMNS, load_anchors, load_roster
from farmwatch.times import parse_utc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except FarmwatchError as failure:  # every expected failure (the console's commands' too) is one line
        print(f"farmwatch-collector: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmwatch-collector",
        description="The farmwatch collector: enrols agents, receives their reports, keeps them in a "
        "database and serves per-device verdicts to analysts. Start with `serve`; the other "
        "commands work on the same database while it runs.",
        epilog="Database URLs: sqlite:///path/farmwatch.db (a plain file path also works) or "
        "postgresql://user@host/db. Run `farmwatch-collector COMMAND --help` for details.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the HTTP collector",
        description="Run the collector's HTTP API (enrolment, report ingest, analyst API, /healthz, "
        "/metrics). Settings come from --config (TOML); the flags below override it.",
        epilog="Example: farmwatch-collector serve --db /var/lib/farmwatch/farmwatch.db "
        "--enroll-secret-file /etc/farmwatch/enroll-secret --analyst-token-file /etc/farmwatch/analyst-token "
        "(make each secret with e.g. `openssl rand -base64 32 > FILE`; 16 characters at least). "
        "Agents enrol with the enrol secret; analysts call /api/v1/devices with the analyst token.",
    )
    serve.add_argument("--host", default="127.0.0.1", metavar="H",
                       help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=8765, metavar="P", help="TCP port to listen on (default: 8765)")
    db_flag(serve)
    serve.add_argument("--config", type=Path, metavar="FILE",
                       help="collector.toml with [collector], [detection], [geo], [agent] (see collector/README.md) "
                       "and [[outputs]], the SIEMs alerts go to (README: Sending alerts to your SIEM)")
    serve.add_argument("--enroll-secret-file", type=Path, metavar="FILE", help="file holding the secret agents present to enrol")
    serve.add_argument("--analyst-token-file", type=Path, metavar="FILE", help="file holding the bearer token of the analyst API")
    serve.add_argument("--tls-cert-file", type=Path, metavar="FILE",
                       help="PEM certificate (chain) to serve HTTPS; needs --tls-key-file")
    serve.add_argument("--tls-key-file", type=Path, metavar="FILE", help="PEM private key of --tls-cert-file")
    serve.add_argument("--migrate", choices=["auto", "check"],
                       help="auto: bring the database's tables to this release's schema at start (under a lock, "
                       "so replicas starting together migrate once); check: refuse to start until "
                       "`farmwatch-collector db upgrade` has (replicas deployed with a separate migration step). "
                       "Default: [storage] migrate in --config, else auto")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                       help="how much the server logs (default: info, one line per request)")
    serve.set_defaults(run=_serve)

    export = commands.add_parser(
        "export",
        help="write stored ingest records as JSON lines",
        description="Write the stored ingest records (received_at, source_ip, geo, report), oldest first, "
        "one JSON object per line: the input of farmwatch-detect.",
    )
    db_flag(export)
    export.add_argument("--since", metavar="TIME", help="only records received at or after this RFC 3339 time, e.g. 2026-11-28T00:00:00Z")
    export.add_argument("--out", type=Path, metavar="FILE", help="file to write (default: standard output); written whole or not at all")
    export.set_defaults(run=_export)

    for table, what in (("roster", "the HR/IT roster: which employee holds which device, where"),
                        ("anchors", "the latency anchors: probe targets and their coordinates")):
        group = commands.add_parser(table, help=f"manage {what}", description=f"Manage {what}.")
        actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
        load = actions.add_parser(
            "import",
            help=f"replace the stored {table} with a CSV file",
            description=f"Replace the stored {table} with the rows of a CSV file (header: "
            f"{','.join(ROSTER_COLUMNS if table == 'roster' else ANCHOR_COLUMNS)}; example: deploy/dev/{table}.csv). "
            "Nothing changes if any row is bad; the error names the line.",
        )
        db_flag(load)
        load.add_argument("csv", type=Path, metavar=f"{table.upper()}.csv")
        load.set_defaults(run=_import_table, table=table)

    device_group = commands.add_parser("devices", help="manage enrolled devices", description="Manage enrolled devices.")
    device_actions = device_group.add_subparsers(title="actions", metavar="ACTION", required=True)
    revoke = device_actions.add_parser(
        "revoke",
        help="revoke a device's token",
        description="Revoke every token of a device: its agent gets 401 and must enrol again with the enrol secret.",
    )
    db_flag(revoke)
    revoke.add_argument("device_id", metavar="DEVICE_ID")
    revoke.set_defaults(run=_revoke)
    purge = device_actions.add_parser(
        "purge",
        help="remove a device's reports and verdict (poisoned or unwanted data)",
        description="Remove a device's stored reports (all, or those received before --before) and its verdict, "
        "in one transaction; the next scoring run scores what is left. The device stays enrolled (its tokens "
        "and enrolment history are kept; use `devices revoke` for tokens). Each purge is written to the audit "
        "log (`farmwatch-collector audit list --device DEVICE_ID`) and printed as one line.",
        epilog="Example: farmwatch-collector devices purge --db /var/lib/farmwatch/farmwatch.db dev-3f2a9c1b0d4e "
        "--before 2026-11-28T00:00:00Z",
    )
    db_flag(purge)
    purge.add_argument("device_id", metavar="DEVICE_ID")
    purge.add_argument("--before", metavar="TIME",
                       help="only reports received before this RFC 3339 time, e.g. 2026-11-28T00:00:00Z (default: all)")
    purge.set_defaults(run=_purge)

    add_alert_commands(commands, db_flag)
    add_db_commands(commands, db_flag)
    add_console_commands(commands, db_flag)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from farmwatch.collector.app import create_app
    from farmwatch.collector.gc_tuning import settle_long_lived

    config = load_config(
        args.config,
        enroll_secret_file=args.enroll_secret_file,
        analyst_token_file=args.analyst_token_file,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
    )
    storage = Storage.open(database_url(args.db), migrate=args.migrate or config.migrate)
    try:
        app = create_app(storage, config, reducer_process=True, writer_process=True)
        settle_long_lived()  # what is built by now lives as long as the process (gc_tuning.py)
        # proxy_headers=False: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1 on its
        # own; the collector applies [collector] trusted_proxies itself (ingest.source_address).
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level,
            proxy_headers=False,
            ssl_certfile=config.tls_cert_file,
            ssl_keyfile=config.tls_key_file,
        )
    finally:
        storage.close()
    return 0


def _export(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    storage = open_existing(args.db)
    try:
        lines = (json.dumps(record, separators=(",", ":")) + "\n" for record in storage.records(since))
        count = _write_lines(lines, args.out)
    finally:
        storage.close()
    if args.out:
        print(f"wrote {count} ingest records to {args.out}", file=sys.stderr)
    return 0


def _write_lines(lines: Iterable[str], out: Path | None) -> int:
    count = 0
    if out is None:
        for line in lines:
            sys.stdout.write(line)
            count += 1
        return count
    folder = out.resolve().parent
    if not folder.is_dir():
        raise CommandError(f"cannot write {out}: folder {folder} does not exist")
    handle = tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{out.name}.", delete=False, encoding="utf-8")
    try:
        with handle:
            for line in lines:
                handle.write(line)
                count += 1
        os.replace(handle.name, out)
    except BaseException:
        os.unlink(handle.name)
        raise
    return count


def _import_table(args: argparse.Namespace) -> int:
    storage = open_existing(args.db)
    try:
        if args.table == "roster":
            count = len(entries := load_roster(args.csv))
            storage.replace_roster(entries)
        else:
            count = len(points := load_anchors(args.csv))
            storage.replace_anchors(points)
    finally:
        storage.close()
    print(f"imported {count} {args.table} rows from {args.csv}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    storage = open_existing(args.db)
    try:
        revoked = storage.revoke(args.device_id, datetime.now(timezone.utc))
    except KeyError:
        raise CommandError(f"no enrolled device {args.device_id!r}") from None
    finally:
        storage.close()
    print(f"revoked {revoked} token(s) of {args.device_id}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    try:
        before = parse_utc(args.before) if args.before else None
    except ValueError as problem:
        raise CommandError(f"--before {problem}") from None
    try:
        actor = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container, a dynamic user)
        actor = f"cli:uid{os.getuid()}"
    storage = open_existing(args.db)
    try:
        purged = purge_device(storage.engine, args.device_id, before, actor, datetime.now(timezone.utc))
    except KeyError:
        raise CommandError(f"no enrolled device {args.device_id!r}") from None
    finally:
        storage.close()
    print(f"purged {purged.reports} report(s) of {args.device_id} ({purged.reports_left} left; verdict "
          f"{'removed' if purged.verdict else 'none'}); audited as {actor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
