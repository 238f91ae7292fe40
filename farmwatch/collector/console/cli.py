"""``farmwatch-collector analysts add|remove|list`` and ``farmwatch-collector audit list``.

A password never appears on the command line (where ``ps`` and shell history would keep it): it is
typed at a prompt, or read from ``--password-file`` (``-`` for standard input), or from standard
input when that is not a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from farmwatch.collector.command_support import open_existing, parse_since
from farmwatch.collector.console.accounts import MIN_PASSWORD, AccountError, Accounts
from farmwatch.collector.console.store import ConsoleStore


def add_commands(commands: argparse._SubParsersAction, db_flag: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    """Add ``analysts`` and ``audit`` to the collector's command parser."""
    group = commands.add_parser("analysts", help="manage the analysts who sign in to the console",
                                description="Manage the named analyst accounts of the web console (/console). "
                                "Passwords are stored only as argon2id hashes.")
    actions = group.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="create an analyst account",
        description=f"Create an analyst account. The password (at least {MIN_PASSWORD} characters) is asked for "
        "twice at a prompt, or read from --password-file, or from standard input when it is not a terminal; "
        "it is never taken as an argument.",
        epilog="Example: farmwatch-collector analysts add alice --db /var/lib/farmwatch/farmwatch.db")
    db_flag(add)
    add.add_argument("name", metavar="NAME", help="sign-in name: letters, digits, '.', '_', '@' or '-'")
    add.add_argument("--password-file", type=Path, metavar="FILE",
                     help="read the password from the first line of FILE ('-' for standard input)")
    add.set_defaults(run=_add)
    remove = actions.add_parser("remove", help="delete an analyst account and end their sessions",
                                description="Delete an analyst account; their open console sessions end at once. "
                                "The audit log keeps their past actions.")
    db_flag(remove)
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_remove)
    listing = actions.add_parser("list", help="list analyst accounts", description="List analyst names and when each was created.")
    db_flag(listing)
    listing.set_defaults(run=_list)

    audit = commands.add_parser("audit", help="read the console's audit log",
                                description="Read the audit log: who signed in, viewed a device, acknowledged, "
                                "suppressed or annotated what, and when.")
    audit_actions = audit.add_subparsers(title="actions", metavar="ACTION", required=True)
    show = audit_actions.add_parser("list", help="print audit entries, newest first",
                                    description="Print audit entries, newest first, one tab-separated line each: "
                                    "time, analyst, action, device, detail.")
    db_flag(show)
    show.add_argument("--device", metavar="DEVICE_ID", help="only entries about this device")
    show.add_argument("--analyst", metavar="NAME", help="only this analyst's entries")
    show.add_argument("--since", metavar="TIME", help="only entries at or after this RFC 3339 time, e.g. 2026-11-28T00:00:00Z")
    show.add_argument("--limit", type=_at_least_one, default=100, metavar="N", help="at most N entries (default: 100)")
    show.set_defaults(run=_audit)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        source = sys.stdin if str(args.password_file) == "-" else None
        if source is None:
            try:
                text = args.password_file.read_text(encoding="utf-8")
            except OSError as failure:
                raise AccountError(f"cannot read {args.password_file}: {failure.strerror}") from None
        else:
            text = source.read()
        return text.splitlines()[0] if text.strip() else ""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ; nothing was changed")
    return first


def _add(args: argparse.Namespace) -> int:
    password = _password(args)
    storage = open_existing(args.db)
    try:
        Accounts(storage.engine).add(args.name, password, datetime.now(timezone.utc))
    finally:
        storage.close()
    print(f"added analyst {args.name}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    storage = open_existing(args.db)
    try:
        Accounts(storage.engine).remove(args.name)
    finally:
        storage.close()
    print(f"removed analyst {args.name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    storage = open_existing(args.db)
    try:
        for name, created in Accounts(storage.engine).names():
            print(f"{name}\t{created.isoformat().replace('+00:00', 'Z')}")
    finally:
        storage.close()
    return 0


def _audit(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    storage = open_existing(args.db)
    try:
        entries = ConsoleStore(storage.engine).audit_entries(device_id=args.device, analyst=args.analyst,
                                                             since=since, limit=args.limit)
    finally:
        storage.close()
    for entry in entries:
        at = entry["at"].isoformat().replace("+00:00", "Z")
        print("\t".join([at, entry["analyst"], entry["action"], entry["device_id"] or "-", entry["detail"] or ""]))
    return 0
