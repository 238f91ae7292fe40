"""``farmwatch-agent``: collect reports on this laptop and deliver them to a farmwatch collector.

Exit codes: 0 done; 2 bad usage (argparse); 64 bad input (missing file, bad config); 74 a local
I/O error (e.g. the report could be neither spooled, the disk being full, nor sent); 75 collector
unreachable or busy (reports kept in the spool); 77 collector refused the enrol secret; for
``verify``: 0 clear, 2 review, 1 farm.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .delivery.transport import MAX_FAILED_ATTEMPTS
from .errors import AgentError, UsageError
from .probes.input.helper_protocol import FLUSH_SECONDS
from .service import Agent, print_report
from .settings import helper_socket_path, resolve

DEFAULT_ONCE_WINDOW_SECONDS = 10.0
DEFAULT_VERIFY_SECONDS = 60.0
EX_IOERR = 74  # sysexits.h


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farmwatch-agent",
        description="Observe this laptop (remote-access tools, sessions, network, input timing) and "
        "send typed reports to a farmwatch collector. Reports are spooled on disk first and leave "
        "the spool only when the collector accepted them.",
        epilog="Start with 'farmwatch-agent once --print' to see what a report holds. Reports the "
        "collector rejects, spooled files that cannot be read, and reports the collector failed on "
        f"{MAX_FAILED_ATTEMPTS} times while taking later ones go to STATE_DIR/quarantine/ with the reason beside them, "
        "and the next report names them. On a full disk the spool is delivered first and a report "
        "that cannot be spooled is sent directly. "
        "Exit codes: 0 ok, 64 bad input, 74 local I/O error (a report neither spooled nor sent), "
        "75 collector unreachable or busy (reports kept), 77 enrol secret refused.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug-level log on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{once,run,verify,input-helper}")

    def collector_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--collector", metavar="URL", help="collector base URL, e.g. https://farmwatch.example.com")
        sub.add_argument("--enroll-secret-file", type=Path, metavar="F",
                         help="file holding the company's enrol secret (used once to get a device token)")
        sub.add_argument("--state-dir", type=Path, metavar="D",
                         help="identity, seq counter and spool (default /var/lib/farmwatch-agent as root, "
                         "~/.local/state/farmwatch-agent otherwise)")
        sub.add_argument("--config", type=Path, metavar="FILE",
                         help="optional TOML file with an [agent] table (collector, salt, probes, ...)")
        sub.add_argument("--input-helper-socket", metavar="PATH",
                         help="take input timing from the signed-in users' 'farmwatch-agent input-helper' "
                         "processes, which connect to this Unix socket (on Windows a named pipe, "
                         "\\\\.\\pipe\\farmwatch-agent-input), instead of reading input here "
                         "(config key input_helper_socket)")
        sub.add_argument("--input-helper-group", metavar="GROUP",
                         help="members of GROUP may connect to that socket (made 0660 and owned by GROUP); "
                         "default: only this agent's own user (0600); not on Windows, where every "
                         "signed-in user may write to the pipe and the service reads who from the sender's process")

    once = commands.add_parser(
        "once", help="collect one report and deliver it (with anything spooled), or print it",
        description="Enrol if needed, collect one window, deliver it and every spooled report in seq "
        "order, then exit. With --print: collect and print the report; no collector needed.",
    )
    once.add_argument("--print", action="store_true", dest="print_only",
                      help="print the report as JSON instead of sending it")
    once.add_argument("--window", type=_positive, default=DEFAULT_ONCE_WINDOW_SECONDS, metavar="S",
                      help=f"seconds to observe (default {DEFAULT_ONCE_WINDOW_SECONDS:g})")
    collector_flags(once)

    run = commands.add_parser(
        "run", help="report every interval until stopped (the service mode)",
        description="Report every --interval seconds until SIGTERM/SIGINT; retry delivery with "
        "backoff while the collector is away, losing nothing.",
    )
    run.add_argument("--interval", type=_positive, metavar="S",
                     help="seconds per report (default: the collector's setting, else 300)")
    collector_flags(run)

    verify = commands.add_parser(
        "verify", help="onboarding check: observe, then print the collector's verdict",
        description="Collect for --seconds (a progress bar shows the seconds left), deliver, print what "
        "this laptop showed (remote-access tools and their round trips, sessions, network, input, "
        "hardware), then ask the collector for this device's verdict and print it in plain words with "
        "what to do next. The collector keeps its detailed reasons for the security team, who see this "
        "check on the console's Onboarding page. Exit 0 clear, 2 review, 1 farm.",
    )
    verify.add_argument("--seconds", type=_positive, default=DEFAULT_VERIFY_SECONDS, metavar="S",
                        help=f"seconds to observe (default {DEFAULT_VERIFY_SECONDS:g})")
    collector_flags(verify)

    helper = commands.add_parser(
        "input-helper", help="per-user helper: send this user's input timing to the agent's service",
        description="Run in a signed-in user's session (a macOS LaunchAgent, a desktop autostart entry, "
        "a Windows Scheduled Task at sign-in running the windowless farmwatch-agent-helper.exe) "
        "when the agent's service cannot see that user's input itself. It listens to this user's "
        "keyboard and mouse (pynput on macOS and Windows; X11 on DISPLAY, else /dev/input, on Linux), reduces "
        "them to timing aggregates (counts, interval histograms; never keys, characters, positions or "
        "window titles) and sends those every --flush-seconds to the service's Unix socket (Windows: "
        "named pipe), the one the service has as input_helper_socket. The service learns this user's "
        "uid from the operating system (Windows: the RID of the helper process's account SID), not "
        "from the helper. Runs until "
        "SIGTERM/SIGINT or sign-out; waits for the service if it is not up yet.",
    )
    helper.add_argument("--socket", type=Path, required=True, metavar="PATH",
                        help="the agent service's input_helper_socket, e.g. /var/run/farmwatch-agent/input.sock "
                        "or, on Windows, \\\\.\\pipe\\farmwatch-agent-input")
    helper.add_argument("--flush-seconds", type=_positive, default=FLUSH_SECONDS, metavar="S",
                        help=f"send what was seen every S seconds (default {FLUSH_SECONDS:g})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="farmwatch-agent: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "input-helper":
            return _input_helper(args)
        settings = resolve(args)
        if args.command == "once" and args.print_only:
            return print_report(settings, args.window)
        agent = Agent(settings)
        try:
            if args.command == "once":
                return agent.once(args.window)
            if args.command == "verify":
                return agent.verify(args.seconds)
            return agent.run(_stop_on_signals())
        finally:
            agent.close()
    except AgentError as error:
        print(f"farmwatch-agent: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # e.g. a full disk under the spool: say so, the spool stays consistent
        print(f"farmwatch-agent: {error}", file=sys.stderr)
        return EX_IOERR
    except KeyboardInterrupt:
        return 130


def _input_helper(args: argparse.Namespace) -> int:
    if args.flush_seconds <= 0:
        raise UsageError("--flush-seconds must be more than 0")
    from .probes.input.helper import run_helper  # the listeners load only in the helper

    return run_helper(helper_socket_path(str(args.socket)), _stop_on_signals(), args.flush_seconds)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so ``run`` finishes its step and stops probes cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


if __name__ == "__main__":
    raise SystemExit(main())
