"""``make run``: a collector on SQLite on localhost and this machine's agent reporting to it.

Both run as real child processes (the same commands an operator runs); this module only prepares
``./run/``, wires them together, prints where to look and stops both on Ctrl-C. See
``deploy/dev/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import httpx

DEV_DATA = Path(__file__).resolve().parent
PREFERRED_PORT = 8765
LOCAL_EMPLOYEE = "E-LOCAL"
CONSOLE_ANALYST = "dev"


class DevRunError(Exception):
    """A step of the developer run failed; the message says which and where its log is."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python deploy/dev/devrun.py",
        description="Start a farmwatch collector on SQLite on 127.0.0.1 and this machine's agent "
        "reporting to it (what `make run` does). Everything lives in --dir; stop with Ctrl-C.",
    )
    parser.add_argument("--dir", type=Path, default=Path("run"), help="working folder (default: ./run)")
    parser.add_argument("--port", type=int, default=PREFERRED_PORT,
                        help=f"collector port; a free one is used when it is taken (default: {PREFERRED_PORT})")
    parser.add_argument("--interval", type=float, default=30.0, help="agent report interval in seconds (default: 30)")
    args = parser.parse_args(argv)
    run = DevRun(args.dir.resolve(), args.port, args.interval)
    stop = _stop_signal()
    try:
        run.start()
        run.wait(stop)
    except DevRunError as failure:
        print(f"devrun: {failure}", file=sys.stderr)
        return 1
    finally:
        run.stop()
    return 0


class DevRun:
    """The two child processes and the files they share."""

    def __init__(self, folder: Path, port: int, interval: float) -> None:
        self.folder = folder
        self.port = port if _port_is_free(port) else _free_port()
        self.interval = interval
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = f"sqlite:///{folder / 'farmwatch.db'}"
        self.secret_file = folder / "enroll-secret"
        self.token_file = folder / "analyst-token"
        self.password_file = folder / "console-password"  # the console sign-in of analyst CONSOLE_ANALYST
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in (self.secret_file, self.token_file):
            if not path.exists():
                path.write_text(secrets.token_urlsafe(32) + "\n")
                path.chmod(0o600)
        config = self.folder / "collector.toml"
        config.write_text("[detection]\ninterval_seconds = 60\n\n[agent]\n"
                          f"interval_seconds = {int(self.interval)}\n")
        self._spawn("collector", [
            *_command("farmwatch-collector", "farmwatch.collector.cli"), "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--db", self.db_url, "--config", str(config),
            "--enroll-secret-file", str(self.secret_file), "--analyst-token-file", str(self.token_file),
        ])
        self._await_health()
        self._import("roster", DEV_DATA / "roster.csv")
        self._add_console_analyst()
        self._import("anchors", self._anchors())
        self._spawn("agent", [
            *_command("farmwatch-agent", "farmwatch.agent.cli"), "run", "--collector", self.url,
            "--enroll-secret-file", str(self.secret_file), "--state-dir", str(self.folder / "agent-state"),
            "--interval", str(self.interval),
        ])
        self._print_guide()

    def wait(self, stop: list[bool]) -> None:
        """Until Ctrl-C/SIGTERM; adds this machine to the roster once its agent has enrolled."""
        local_added = False
        while not stop[0]:
            for name, child in self.children.items():
                if child.poll() is not None:
                    raise DevRunError(f"the {name} exited with {child.returncode}; see {self._log(name)}")
            if not local_added:
                local_added = self._add_local_device()
            time.sleep(0.5)
        print("\nstopping the agent and the collector ...")

    def stop(self) -> None:
        """SIGTERM the agent first (it finishes its step), then the collector; SIGKILL what lingers."""
        for name in ("agent", "collector"):
            child = self.children.pop(name, None)
            if child is None or child.poll() is not None:
                continue
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _spawn(self, name: str, command: list[str]) -> None:
        with open(self._log(name), "ab") as log:
            # Own process group: Ctrl-C reaches only devrun, which then stops the children in order.
            self.children[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                                   preexec_fn=die_with_parent)

    def _log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def _await_health(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.children["collector"].poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise DevRunError(f"the collector did not come up on {self.url}; see {self._log('collector')}")

    def _import(self, table: str, path: Path) -> None:
        done = subprocess.run(
            [*_command("farmwatch-collector", "farmwatch.collector.cli"), table, "import", "--db", self.db_url, str(path)],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise DevRunError(f"{table} import failed: {done.stderr.strip()}")

    def _add_console_analyst(self) -> None:
        """The console's sign-in for this run: analyst CONSOLE_ANALYST, password kept in --dir (0600)."""
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(12) + "\n")
            self.password_file.chmod(0o600)
        done = subprocess.run(
            [*_command("farmwatch-collector", "farmwatch.collector.cli"), "analysts", "add", CONSOLE_ANALYST,
             "--db", self.db_url, "--password-file", str(self.password_file)],
            capture_output=True, text=True,
        )
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise DevRunError(f"could not create the console analyst: {done.stderr.strip()}")

    def _anchors(self) -> Path:
        """deploy/dev/anchors.csv with the loopback anchor pointed at the port the collector got."""
        target = self.folder / "anchors.csv"
        with open(DEV_DATA / "anchors.csv", newline="") as source, open(target, "w", newline="") as out:
            rows = list(csv.DictReader(source))
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "port": str(self.port)} if row["address"] == "127.0.0.1" else row)
        return target

    def _add_local_device(self) -> bool:
        try:
            listed = httpx.get(f"{self.url}/api/v1/devices", headers={"Authorization": f"Bearer {self._token()}"}, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return False
        ours = [row["device_id"] for row in listed if row["employee_id"] is None]
        if not ours:
            return False
        roster = self.folder / "roster.csv"
        shutil.copyfile(DEV_DATA / "roster.csv", roster)
        with open(roster, "a", newline="") as out:
            csv.writer(out).writerows([[device, LOCAL_EMPLOYEE, "", "", "", "", "", ""] for device in ours])
        self._import("roster", roster)
        for device in ours:
            print(f"this machine enrolled as {device} (roster: {LOCAL_EMPLOYEE}); its verdict:\n"
                  f"  curl -H 'Authorization: Bearer {self._token()}' {self.url}/api/v1/devices/{device}",
                  flush=True)
        return True

    def _token(self) -> str:
        return self.token_file.read_text().strip()

    def _print_guide(self) -> None:
        token = self._token()
        print(f"""
farmwatch is running (Ctrl-C stops both processes)

  collector   {self.url}    database {self.db_url}
  agent       reports every {self.interval:g} s     state {self.folder / 'agent-state'}
  logs        {self._log('collector')}   {self._log('agent')}
  secrets     enrol secret {self.secret_file}   analyst token {self.token_file}

  console     {self.url}/console/   sign in as {CONSOLE_ANALYST}, password {self.password_file.read_text().strip()}
              (this machine appears there once its first report is scored, within a minute)
  health      curl {self.url}/healthz
  metrics     curl {self.url}/metrics
  devices     curl -H 'Authorization: Bearer {token}' {self.url}/api/v1/devices
  one device  curl -H 'Authorization: Bearer {token}' {self.url}/api/v1/devices/DEVICE_ID
  export      farmwatch-collector export --db {self.db_url}
""", flush=True)


def _command(script: str, module: str) -> list[str]:
    """The console script beside this interpreter, or ``python -m module`` when it is not installed."""
    beside = Path(sys.executable).with_name(script)
    return [str(beside)] if beside.exists() else [sys.executable, "-m", module]


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stop_signal() -> list[bool]:
    """A flag set by Ctrl-C, SIGTERM or a closed terminal, checked by :meth:`DevRun.wait`."""
    flag = [False]

    def _set(_signum: int, _frame: FrameType | None) -> None:
        flag[0] = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _set)
    return flag


def die_with_parent() -> None:
    """In a child before exec: SIGTERM when the process that started it dies, even by SIGKILL (Linux prctl)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


if __name__ == "__main__":
    sys.exit(main())
