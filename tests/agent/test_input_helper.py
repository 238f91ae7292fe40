"""The per-user input helper and the service's socket for it (issue 14).

The last test runs what a Linux or macOS deployment runs: the real agent service (``farmwatch-agent
run``) reporting to a real collector with ``input_helper_socket`` in its config file, the real
``farmwatch-agent input-helper`` as a second process listening to a real X server (Xvfb) that
xdotool types into (XTest), and clients of other users (uid 65534, and one outside the socket's
group) that send valid, invalid, oversized and forged messages with the system's Python. No uinput
here: this kernel is built without it (tests/fixtures/evdev_devices.py), so the X11 listener is the
helper's real input source.
"""

from __future__ import annotations

import grp
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_procs import BIN, export
from collector_process import RunningCollector
from pydantic import ValidationError
from xserver import xtool, xvfb

from farmwatch.agent.cli import main
from farmwatch.agent.probes.input.helper_protocol import MAX_MESSAGE_BYTES, HelperMessage, InputAggregate, encode
from farmwatch.agent.probes.input.helper_socket import HelperSocketListener
from farmwatch.agent.probes.input.stats import InputStats
from farmwatch.agent.settings import load_file

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets (Windows has the named pipe: "
                                "tests/agent/test_input_helper_pipe.py)")


Event = tuple[str, float, float | None, bool]  # kind, time, distance moved, injected


def session(start: float) -> list[Event]:
    """Typing at 150 ms with a 2 ms burst, a pause, mouse moves at 8 ms with one jump, a click."""
    events: list[Event] = [("key", start + i * 0.150, None, i % 5 == 0) for i in range(12)]
    events += [("key", start + 2.5 + i * 0.002, None, False) for i in range(4)]
    events += [("move", start + 4 + i * 0.008, 250.0 if i == 6 else 3.0, False) for i in range(9)]
    return [*events, ("button", start + 5.2, None, False)]


def record(stats: InputStats, event: Event) -> None:
    kind, at, distance, injected = event
    if kind == "move":
        stats.move(at, distance, injected)
    elif kind == "key":
        stats.key(at, injected)
    else:
        stats.button(at, injected)


def test_drained_parts_merged_by_the_service_give_the_window_the_listener_would() -> None:
    """A helper drains every few events; the service's sum equals one InputStats that saw it all
    (key intervals at the millisecond the wire carries)."""
    whole, helper, service = InputStats(), InputStats(), InputStats()
    for number, event in enumerate(session(1000.0), start=1):
        record(whole, event)
        record(helper, event)
        if number % 4 == 0:  # drains split typing runs and mouse movements: intervals must survive
            service.merge(helper.drain())
    service.merge(helper.drain())
    merged, direct = service.summary(10.0), whole.summary(10.0)
    assert merged == direct
    assert merged.key_events == 16 and merged.key_burst_fraction == round(3 / 16, 4)
    assert merged.active_seconds == 5.0  # 1000-1002 typing, 1004 moves, 1005 click: each counted once
    assert merged.mouse_jump_fraction == round(1 / 9, 4) and merged.injected_events == 3


def test_messages_outside_the_bounds_are_refused() -> None:
    fine = {"uid": 501, "source": "pynput", "aggregate": {"key_events": 3, "key_interval_ms": {"150": 2}}}
    assert HelperMessage.model_validate(fine).aggregate.key_interval_ms == {150: 2}
    for bad in (
        {**fine, "keys": "hunter2"},  # nothing but aggregates: unknown fields are refused
        {**fine, "aggregate": {"key_events": 1, "key_interval_ms": {"150": 2}}},  # more intervals than keys
        {**fine, "aggregate": {"mouse_events": 1, "mouse_moves": 2}},
        {**fine, "aggregate": {"key_events": -1}},
        {**fine, "uid": -1},
        {**fine, "source": "keylogger"},
        {**fine, "virtual_devices": ["a\0b"]},
        {**fine, "v": 2},
    ):
        with pytest.raises(ValidationError):
            HelperMessage.model_validate(bad)


class _Merged:
    def __init__(self) -> None:
        self.parts: list[InputAggregate] = []

    def merge(self, part: InputAggregate) -> None:
        self.parts.append(part)


def _wait(condition: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _closed_by_peer(connection: socket.socket) -> bool:
    connection.settimeout(10)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def test_the_service_socket_takes_valid_messages_and_refuses_forged_invalid_and_oversized_ones(tmp_path: Path) -> None:
    path = tmp_path / "run" / "input.sock"
    sink = _Merged()
    listener = HelperSocketListener(path, sink)
    old_umask = os.umask(0o077)  # as launchd's Umask 63 gives the daemon
    try:
        listener.start()
    finally:
        os.umask(old_umask)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_uid == os.getuid()
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755  # the folder it made: helpers can reach the socket
        me = os.getuid()
        good = encode(HelperMessage(uid=me, source="x11", virtual_devices=["xrdpKeyboard"],
                                    aggregate=InputAggregate(key_events=2, key_interval_ms={120: 1}, active_seconds=1)))
        with socket.socket(socket.AF_UNIX) as helper:
            helper.connect(str(path))
            helper.sendall(good[:10])  # a message may arrive in pieces
            helper.sendall(good[10:] + good)
            _wait(lambda: len(sink.parts) == 2, "two merged messages")
            forged = encode(HelperMessage(uid=me + 1, source="x11", aggregate=InputAggregate(key_events=50)))
            helper.sendall(forged)
            assert _closed_by_peer(helper)
        for payload in (b'{"uid": 0, "source": "x11", "aggregate": {"key_events": "many"}}\n', b"not json\n",
                        b"x" * (MAX_MESSAGE_BYTES + 10)):
            with socket.socket(socket.AF_UNIX) as attacker:
                attacker.connect(str(path))
                attacker.sendall(payload)
                assert _closed_by_peer(attacker)
        senders, refusals = listener.take_window()
        assert len(sink.parts) == 2 and sink.parts[0].key_events == 2  # nothing of the refused ones
        assert senders == {me} and listener.source == "x11" and listener.device_names() == []
        assert f"uid {me} sent aggregates claiming uid {me + 1}" in refusals[0]
        assert "aggregate.key_events" in refusals[1] and "invalid message" in refusals[2]
        assert f"longer than {MAX_MESSAGE_BYTES} bytes" in refusals[3] and len(refusals) == 4
        with socket.socket(socket.AF_UNIX) as helper:  # still serving
            helper.connect(str(path))
            helper.sendall(good)
            _wait(lambda: len(sink.parts) == 3, "a message after the refusals")
        assert listener.take_window() == ({me}, [])
    finally:
        listener.stop()
    assert not path.exists()


def test_a_live_socket_or_another_file_is_not_taken_over_and_a_stale_socket_is(tmp_path: Path) -> None:
    path = tmp_path / "input.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="exists and is not a socket"):
        HelperSocketListener(path, _Merged()).start()
    path.unlink()
    first = HelperSocketListener(path, _Merged())
    first.start()
    try:
        with pytest.raises(OSError, match="another process already listens"):
            HelperSocketListener(path, _Merged()).start()
    finally:
        first.stop()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed agent leaves
    stale.close()
    second = HelperSocketListener(path, _Merged())
    second.start()
    second.stop()


@pytest.mark.parametrize(("config", "flags", "message"), [
    ('input_helper_socket = "run/input.sock"', [], "input_helper_socket must be an absolute path"),
    (f'input_helper_socket = "/run/{"x" * 120}.sock"', [], "a Unix socket path holds at most 103"),
    ('input_helper_socket = "/tmp"', [], "is a directory"),
    ("input_helper_socket = 3", [], "[agent].input_helper_socket has the wrong type"),
    ('input_helper_group = "staff"', [], "input_helper_group is set but input_helper_socket is not"),
    ('input_helper_socket = "/run/fw/input.sock"', ["--input-helper-group", "no-such-group-here"],
     "input_helper_group 'no-such-group-here' is not a group"),
])
def test_bad_helper_socket_settings_stop_the_agent_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, flags: list[str], message: str) -> None:
    file = tmp_path / "agent.toml"
    file.write_text(f"[agent]\n{config}\n")
    assert main(["once", "--print", "--window", "0", "--config", str(file), *flags]) == 64
    assert message in capsys.readouterr().err


def test_the_example_config_documents_the_helper_keys_and_they_load(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / "deploy" / "agent" / "agent.toml").read_text()
    lines = [line.lstrip("# ") for line in example.splitlines() if line.lstrip("# ").startswith("input_helper_")]
    assert [line.split()[0] for line in lines] == ["input_helper_socket", "input_helper_group"]
    uncommented = tmp_path / "agent.toml"
    uncommented.write_text("[agent]\n" + "\n".join(lines) + "\n")
    table = load_file(uncommented)
    assert table["input_helper_socket"] == "/var/run/farmwatch-agent/input.sock" and table["input_helper_group"] == "staff"


def test_the_helper_refuses_a_relative_socket(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["input-helper", "--socket", "input.sock"]) == 64
    assert "input_helper_socket must be an absolute path" in capsys.readouterr().err


# A client as another user, with the system's Python (the repository may sit in a 0700 folder that
# other users cannot read): sends its stdin to the socket argv[1], says how the service answered.
CLIENT = """
import socket, sys
connection = socket.socket(socket.AF_UNIX)
try:
    connection.connect(sys.argv[1])
except OSError as error:
    print("refused", error.errno)
    raise SystemExit
connection.sendall(sys.stdin.buffer.read())
connection.settimeout(5)
try:
    print("closed" if connection.recv(1) == b"" else "answered")
except TimeoutError:
    print("open")
"""


def as_user(uid: int, gid: int, path: Path, payload: bytes) -> str:
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-c",
                           CLIENT, str(path)], input=payload, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A folder other users can reach (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="farmwatch-helper-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.root
def test_the_service_reports_what_the_helper_process_sends(collector: RunningCollector, tmp_path: Path,
                                                           socket_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: clients run as other users (setpriv) to test the socket's group and peer uid")
    if shutil.which("setpriv") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("setpriv (util-linux) and /usr/bin/python3 are needed for the other users' clients")
    nogroup = grp.getgrgid(65534).gr_name
    path = socket_dir / "run" / "input.sock"  # the service makes the folder, as /var/run/farmwatch-agent
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nprobes = ["input"]\ninput_helper_socket = "{path}"\ninput_helper_group = "{nogroup}"\n')
    logs = tmp_path / "service.log"
    with xvfb() as display, logs.open("w") as log:
        service = subprocess.Popen(
            [str(BIN / "farmwatch-agent"), "run", "--interval", "4", "--config", str(config), "--collector", collector.url,
             "--enroll-secret-file", str(collector.enroll_secret_file), "--state-dir", str(tmp_path / "state")],
            stdout=log, stderr=log)
        helper = subprocess.Popen([str(BIN / "farmwatch-agent"), "input-helper", "--socket", str(path),
                                   "--flush-seconds", "0.5"], env={**os.environ, "DISPLAY": display},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            _wait(path.exists, "the service's socket")
            socket_mode = path.stat()
            # the helper's X listener is up once it has connected to the service (it sends after its first flush)
            _wait(lambda: any(r["report"].get("input", {}).get("helper_uids") for r in export(collector)),
                  "a report with the helper's uid", timeout=60)
            xtool(display, "xdotool", "type", "--delay", "100", "farmwatch")  # 9 keys, as root: the helper's user
            xtool(display, "xdotool", "mousemove_relative", "--", "7", "7")
            valid = encode(HelperMessage(uid=65534, source="pynput", aggregate=InputAggregate(
                key_events=5, key_interval_ms={200: 4}, active_seconds=2)))
            answers = {
                "valid": as_user(65534, 65534, path, valid),
                "forged": as_user(65534, 65534, path, encode(HelperMessage(uid=0, source="x11",
                                                                           aggregate=InputAggregate(key_events=1000)))),
                "invalid": as_user(65534, 65534, path, b'{"uid": 65534, "source": "x11", "aggregate": []}\n'),
                "oversized": as_user(65534, 65534, path, b"[" * (MAX_MESSAGE_BYTES + 1)),
                "outside the group": as_user(12345, 12345, path, valid),
            }

            def seen() -> tuple[int, set[int], list[str]]:
                reports = [r["report"] for r in export(collector)]
                keys = sum(r.get("input", {}).get("key_events", 0) for r in reports)
                uids = {u for r in reports for u in r.get("input", {}).get("helper_uids") or []}
                errors = [e["message"] for r in reports for e in r["errors"] if e["probe"] == "input"]
                return keys, uids, errors

            _wait(lambda: seen()[0] >= 9 + 5 and len(seen()[2]) >= 3, "the typed keys and the refusals", timeout=60)
            time.sleep(5)  # one more window: nothing else may arrive
            keys, uids, errors = seen()
            assert service.poll() is None, logs.read_text()  # refusals never stopped the service
        finally:
            helper.send_signal(signal.SIGTERM)
            service.send_signal(signal.SIGTERM)
            _, helper_err = helper.communicate(timeout=30)
            service.wait(timeout=30)
    assert helper.returncode == 0 and service.returncode == 0, helper_err + logs.read_text()
    assert stat.S_IMODE(socket_mode.st_mode) == 0o660 and socket_mode.st_gid == 65534 and socket_mode.st_uid == 0
    assert answers == {"valid": "open", "forged": "closed", "invalid": "closed", "oversized": "closed",
                       "outside the group": "refused 13"}  # EACCES: the socket file's mode
    assert keys == 9 + 5  # the helper's typed keys and the other user's valid message; not the forged 1000
    assert uids == {0, 65534}
    assert any("uid 65534 sent aggregates claiming uid 0" in e for e in errors), errors
    assert any("uid 65534: invalid message (aggregate" in e for e in errors), errors
    assert any(f"uid 65534: a message longer than {MAX_MESSAGE_BYTES} bytes" in e for e in errors), errors
    reports = [r["report"] for r in export(collector)]
    assert sum(r.get("input", {}).get("injected_events", 0) for r in reports) == 9 + 1  # XTest's keys and move
    assert {r["input"]["source"] for r in reports if "input" in r} <= {"x11", "pynput"}
    assert not path.exists()  # the service removed its socket on SIGTERM


def test_without_a_helper_in_the_window_the_section_is_missing_and_says_why(tmp_path: Path) -> None:
    from farmwatch.agent.probes.base import ProbeContext, ProbeUnavailable
    from farmwatch.agent.probes.input.probe import InputTimingProbe

    path = tmp_path / "input.sock"
    probe = InputTimingProbe(ProbeContext(platform="linux", sys_root=tmp_path, input_helper_socket=path))

    def window() -> list[int] | None:
        """The helper uids of the window ending now; None when the probe had no helper."""
        try:
            return probe.collect().helper_uids
        except ProbeUnavailable as why:
            assert "no input helper was connected to" in str(why) and "input.sock in this window" in str(why)
            return None

    probe.start()
    try:
        assert window() is None
        with socket.socket(socket.AF_UNIX) as helper:  # connected, nobody typing: a section of zeros
            helper.connect(str(path))
            helper.sendall(encode(HelperMessage(uid=os.getuid(), source="x11", aggregate=InputAggregate())))
            _wait(lambda: window() == [os.getuid()], "the helper's uid in a window")
        _wait(lambda: window() is None, "a window after the helper left")  # it left: the windows say so again
    finally:
        probe.stop()


def test_one_user_cannot_hold_more_than_a_few_connections(tmp_path: Path) -> None:
    from farmwatch.agent.probes.input.helper_listener import MAX_HELPERS_PER_USER

    path = tmp_path / "input.sock"
    listener = HelperSocketListener(path, _Merged())
    listener.start()
    held = [socket.socket(socket.AF_UNIX) for _ in range(MAX_HELPERS_PER_USER)]
    try:
        for connection in held:
            connection.connect(str(path))
        _wait(lambda: len(listener.take_window()[0]) == 1, "the held connections accepted")
        with socket.socket(socket.AF_UNIX) as extra:
            extra.connect(str(path))
            assert _closed_by_peer(extra)
        _, refusals = listener.take_window()
        assert refusals == [f"input helper of uid {os.getuid()} refused: that user already has "
                            f"{MAX_HELPERS_PER_USER} connected"]
        held[0].sendall(encode(HelperMessage(uid=os.getuid(), source="x11", aggregate=InputAggregate())))
        held[0].settimeout(0.5)
        with pytest.raises(TimeoutError):  # the connections within the limit stay open
            held[0].recv(1)
    finally:
        for connection in held:
            connection.close()
        listener.stop()
