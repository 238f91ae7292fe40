"""The input helpers' named pipe on a real Windows machine (GitHub's windows-latest runner:
.github/workflows/windows-agent-tests.yml); skipped elsewhere, since neither named pipes nor pywin32
exist there. Real pywin32, real pipes, real helper processes: no part of the Windows API is faked.

The service's end (NamedPipeListener, and the input probe over it) names each sender by the RID of
its process's account, checked here against ``whoami /user``; forged, invalid and oversized
messages are refused and named; a second process cannot take the pipe's name; one user cannot
hold more than MAX_HELPERS_PER_USER connections; and ``farmwatch-agent input-helper`` itself (pynput
in the runner's desktop session) feeds the probe's report.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.input.helper_listener import MAX_HELPERS_PER_USER
from farmwatch.agent.probes.input.helper_pipe import PIPE_PREFIX, NamedPipeListener, PipeConnection
from farmwatch.agent.probes.input.helper_protocol import MAX_MESSAGE_BYTES, HelperMessage, InputAggregate, encode
from farmwatch.agent.probes.input.probe import InputTimingProbe
from farmwatch.agent.probes.input.stats import InputStats
from farmwatch.contract import InputTiming

pytestmark = [pytest.mark.skipif(sys.platform != "win32", reason="named pipes and pywin32: Windows only "
                                 "(run by .github/workflows/windows-agent-tests.yml)"), pytest.mark.slow]

SENDER = """
import sys
from pathlib import Path
from farmwatch.agent.probes.input.helper_protocol import HelperMessage, InputAggregate, encode
from farmwatch.agent.probes.input.helper_transport import connect_to_service, current_user_id
connection = connect_to_service(Path(sys.argv[1]))
aggregate = InputAggregate(key_events=3, key_interval_ms={120: 2})
connection.sendall(encode(HelperMessage(uid=current_user_id(), source="pynput", aggregate=aggregate)))
sys.stdin.read()  # alive until the test has seen the message, like a helper between flushes
connection.close()
"""


def _whoami_rid() -> int:
    """This account's RID as Windows' own whoami gives it: the last part of its SID."""
    line = subprocess.run(["whoami", "/user", "/fo", "csv", "/nh"], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()
    sid = line.rsplit(",", 1)[1].strip('"')
    assert sid.startswith("S-1-"), line
    return int(sid.rsplit("-", 1)[1])


def _wait(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _pipe() -> str:
    return f"{PIPE_PREFIX}farmwatch-test-{uuid.uuid4().hex}"


class _Window:
    """What the listener said across several take_window calls."""

    def __init__(self, listener: NamedPipeListener) -> None:
        self.listener = listener
        self.senders: set[int] = set()
        self.refusals: list[str] = []

    def refused(self, words: str) -> bool:
        senders, refusals = self.listener.take_window()
        self.senders |= senders
        self.refusals += refusals
        return any(words in refusal for refusal in self.refusals)


@pytest.fixture
def listener() -> Iterator[NamedPipeListener]:
    running = NamedPipeListener(_pipe(), InputStats())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _send(name: str, data: bytes) -> None:
    connection = PipeConnection(name)
    try:
        connection.sendall(data)
    finally:
        connection.close()


def test_a_helper_process_is_named_by_its_accounts_rid(listener: NamedPipeListener) -> None:
    stats = listener.sink
    assert isinstance(stats, InputStats)
    sender = subprocess.Popen([sys.executable, "-c", SENDER, listener.address], stdin=subprocess.PIPE)
    try:
        _wait(lambda: stats.key_events == 3, "the helper's aggregate merged")
    finally:
        sender.communicate(timeout=60)  # closes its stdin: it exits
    assert sender.returncode == 0
    senders, refusals = listener.take_window()
    assert senders == {_whoami_rid()} and refusals == []
    assert listener.source == "pynput"


def test_forged_invalid_and_oversized_messages_are_refused_and_named(listener: NamedPipeListener) -> None:
    rid = _whoami_rid()
    window = _Window(listener)
    forged = HelperMessage(uid=rid + 1, source="pynput", aggregate=InputAggregate(key_events=1))
    _send(listener.address, encode(forged))
    _wait(lambda: window.refused(f"claiming uid {rid + 1}"), "the forged message refused")
    _send(listener.address, b'{"v": 1, "uid": "me"}\n')
    _wait(lambda: window.refused("invalid message"), "the invalid message refused")
    _send(listener.address, b"x" * (MAX_MESSAGE_BYTES + 1))
    _wait(lambda: window.refused(f"longer than {MAX_MESSAGE_BYTES} bytes"), "the oversized message refused")
    stats = listener.sink
    assert isinstance(stats, InputStats) and stats.key_events == 0  # nothing refused was merged
    assert window.senders == {rid}


def test_a_second_process_cannot_take_the_pipes_name(listener: NamedPipeListener) -> None:
    squatter = NamedPipeListener(listener.address, InputStats())
    with pytest.raises(OSError, match="FILE_FLAG_FIRST_PIPE_INSTANCE"):
        squatter.start()


def test_one_user_cannot_hold_more_than_a_few_connections(listener: NamedPipeListener) -> None:
    window = _Window(listener)
    connections = [PipeConnection(listener.address) for _ in range(MAX_HELPERS_PER_USER + 1)]
    try:
        _wait(lambda: window.refused(f"already has {MAX_HELPERS_PER_USER} connected"), "the extra connection refused")
    finally:
        for connection in connections:
            connection.close()


def test_the_input_helper_command_feeds_the_probes_report() -> None:
    name = _pipe()
    probe = InputTimingProbe(ProbeContext(input_helper_socket=Path(name)))
    probe.start()
    helper = subprocess.Popen([sys.executable, "-m", "farmwatch.agent.cli", "input-helper", "--socket", name,
                               "--flush-seconds", "0.5"], stderr=subprocess.PIPE, text=True)
    sections: list[InputTiming] = []

    def reported() -> bool:
        try:
            sections.append(probe.collect())
        except ProbeUnavailable:
            return False
        return True

    try:
        _wait(reported, "a window with the helper's figures", seconds=60)
    except AssertionError:
        pass  # failed below, with what the helper said
    finally:
        helper.terminate()
        _out, errors = helper.communicate(timeout=30)
        probe.stop()
    assert sections, f"no window had the helper's figures; the helper said: {errors}"
    assert sections[-1].helper_uids == [_whoami_rid()], errors
    assert sections[-1].source == "pynput", errors
