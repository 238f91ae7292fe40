"""``farmwatch-collector outputs test`` and ``farmwatch-collector alerts list``.

``outputs test`` sends one clearly marked test alert (``test: true``, title starting "TEST ALERT",
device ``farmwatch-test``) straight to each configured output, bypassing the outbox, and prints what
each answered; it exits 1 when any output refused. ``alerts list`` shows the newest alerts in the
database and, per output, whether each was delivered, is pending (with attempts and the last
error) or overflowed.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from farmwatch.collector.command_support import CommandError, open_existing
from farmwatch.collector import outbox
from farmwatch.collector.alerts import Alert, AlertFinding
from farmwatch.collector.config import load_outputs
from farmwatch.collector.outputs import build
from farmwatch.collector.outputs.base import DeliveryFailed


def add_commands(commands: argparse._SubParsersAction, db_flag: Callable[[argparse.ArgumentParser], None]) -> None:  # type: ignore[type-arg]
    """Add ``outputs test`` and ``alerts list`` to the collector's command line."""
    outputs = commands.add_parser("outputs", help="check the SIEM outputs of a config",
                                  description="Check the [[outputs]] of a collector config.")
    output_actions = outputs.add_subparsers(title="actions", metavar="ACTION", required=True)
    test = output_actions.add_parser(
        "test",
        help="send a test alert to each output and print what it answered",
        description="Send one test alert (marked test: true, titled 'TEST ALERT', device farmwatch-test) "
        "directly to every [[outputs]] table of --config, or only to the one named NAME, and print each "
        "receiver's answer. Nothing is written to the database. Exits 1 when any output refused.",
        epilog="Example: farmwatch-collector outputs test --config /etc/farmwatch/collector.toml soc-syslog",
    )
    test.add_argument("name", nargs="?", metavar="NAME", help="the output's name (default: every output)")
    test.add_argument("--config", type=Path, required=True, metavar="FILE", help="the collector.toml serve uses")
    test.set_defaults(run=_test_outputs)

    alerts = commands.add_parser("alerts", help="show raised alerts", description="Show the alerts the collector raised.")
    alert_actions = alerts.add_subparsers(title="actions", metavar="ACTION", required=True)
    listing = alert_actions.add_parser(
        "list",
        help="recent alerts and their delivery state per output",
        description="Print the newest alerts (newest first): when, which device, the verdict change, "
        "the risk, and per output: delivered, pending (attempts, last error) or overflow (the "
        "output's outbox was full; the alert is kept but not sent).",
    )
    db_flag(listing)
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="how many alerts (default: 20)")
    listing.set_defaults(run=_list_alerts)


def test_alert(now: datetime) -> Alert:
    """The alert ``outputs test`` sends: plainly a test, about no real device."""
    finding = AlertFinding(detector="outputs_test", severity="info", score=0.0, attack=None, evidence={},
                           summary="This is a test alert sent by `farmwatch-collector outputs test`; no laptop is involved.")
    return Alert(alert_id=str(uuid.uuid4()), device_id="farmwatch-test", hostname="farmwatch-test", employee_id=None,
                 claimed_city=None, claimed_country=None, verdict="review", previous_verdict="clear", risk=0.0,
                 findings=(finding,), attack_ids=(), first_seen=None, last_seen=None, raised_at=now, link=None,
                 test=True)


def _test_outputs(args: argparse.Namespace) -> int:
    configured = load_outputs(args.config)
    chosen = [settings for settings in configured if args.name in (None, settings.name)]
    if not chosen:
        names = ", ".join(settings.name for settings in configured) or "none"
        wanted = f"no output named {args.name!r}" if args.name else "no [[outputs]]"
        raise CommandError(f"{args.config}: {wanted} (configured: {names})")
    refused = 0
    for settings in chosen:
        output = build(settings)
        try:
            answer = output.send([test_alert(datetime.now(timezone.utc))])
            print(f"{settings.name} ({settings.type} {settings.url}): accepted: {answer}")
        except DeliveryFailed as failure:
            refused += 1
            print(f"{settings.name} ({settings.type} {settings.url}): FAILED: {failure}")
        finally:
            output.close()
    return 1 if refused else 0


def _list_alerts(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    storage = open_existing(args.db)
    try:
        rows = outbox.recent(storage, args.limit)
    finally:
        storage.close()
    if not rows:
        print("no alerts yet")
        return 0
    for row in rows:
        raised = row["raised_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{raised}  {row['alert_id']}  {row['device_id']} ({row['hostname']})  "
              f"{row['previous_verdict']} -> {row['verdict']}  risk {row['risk']:.2f}")
        for delivery in row["outputs"]:
            state = delivery["state"]
            if state == outbox.DELIVERED:
                detail = f"delivered {delivery['delivered_at']:%Y-%m-%dT%H:%M:%SZ}"
            elif state == outbox.PENDING:
                error = f", last error: {delivery['last_error']}" if delivery["last_error"] else ""
                detail = f"pending after {delivery['attempts']} attempt(s){error}"
            else:
                detail = "overflow: the outbox was full; kept, not sent"
            print(f"    {delivery['output']}: {detail}")
    return 0
