"""What the agent costs on this machine, against issue 13's targets, each beside a baseline of the same run.

- **Cycle CPU**: one full collection by every probe the agent runs by default (the input listener
  thread aside; this machine has no input devices, so it has none), assembled into the report and
  encoded as it is spooled, timed as CPU (user + system, the agent's own and its commands' children)
  in a fresh process. Baseline: the raw OS work that collection stands for, timed the same way and
  interleaved with it: ``ps -e -o pid,comm,args``, ``ss -tnpi`` and a listing of
  ``/sys/bus/usb/devices`` run by one ``sh``. Target: at most 2x. Median of REPETITIONS pairs.
- **Average CPU and steady RSS**: a real ``farmwatch-agent run --interval 60`` reporting to a real
  collector on loopback, measured over STEADY_SECONDS after start-up (two reports fall inside).
  Targets 0.5 % of one core and 40 MB; the RSS baseline is a bare ``python -c pass`` interpreter.
  Four agents run at once, each with its own collector: one over plain HTTP, three over HTTPS to
  a collector serving a certificate from a throw-away CA (tests/fixtures/throwaway_ca.py): one
  trusting that CA through ``ca_file`` (what a company with its own CA configures), two through
  the system's CAs with the test CA added (no ``ca_file``: a collector with a public certificate),
  once as the agent reads them (the hashed directory, ``SSL_CERT_DIR``: one issuer at a time) and
  once as a bundle loaded whole (``SSL_CERT_FILE``: what ``ssl.create_default_context()`` loaded
  before), the baseline of the former; that one has no target: the agent never runs that way.
- **Report size**: ``farmwatch-agent once --print`` on this machine, compact JSON gzipped as the
  transport sends it (target 4 KB; tests/agent/test_report_size.py checks a busier laptop's
  report from fixtures).
- **Import time**: wall time to import the agent's CLI in a fresh interpreter, beside a bare one.

Where a collection's time goes: ``py-spy record -r 1000 -f raw -o cycles.txt -- python
bench/agent_cost.py --cycle-worker 300`` (py-spy, in the dev extra, samples the probes' threads too).

Two other engineers measure on this 2-core machine at the same time: the load averages printed
before and after say how contended a run was; baseline and figure are interleaved so both see it.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))
from collector_process import SERVE, die_with_parent, free_port, launch_collector, wait_for_tls  # noqa: E402  (the tests')
from throwaway_ca import make_pki  # noqa: E402
from report import Figure, at_most, describe, idle_phase, publish, quick  # noqa: E402

REPETITIONS = 3 if quick() else 30
INTERVAL_SECONDS = 5 if quick() else 60
STEADY_SECONDS = 10 if quick() else 125  # from just after start-up: reports at 60 s and 120 s fall inside
RAW_OS_WORK = "ps -e -o pid,comm,args; ss -tnpi; ls /sys/bus/usb/devices"
AGENT = str(Path(sys.executable).parent / "farmwatch-agent")


def _cpu(who: int) -> float:
    used = resource.getrusage(who)
    return used.ru_utime + used.ru_stime


def cycle_worker(repetitions: int) -> None:
    """In a fresh process: per repetition, CPU of one agent collection and of the raw OS work (JSON on stdout)."""
    from farmwatch.agent.probes.base import ProbeContext
    from farmwatch.agent.runner import Runner, utc_now
    from farmwatch.contract import to_wire

    runner = Runner(ProbeContext())  # every registered probe, as the agent runs by default
    runner.start()
    start = utc_now(runner.context)

    def collect() -> None:
        report = runner.report("bench", 1, start, utc_now(runner.context))
        json.dumps(to_wire(report)).encode()  # as the agent spools it

    collect()  # warm: first-use imports and caches belong to start-up, not to a cycle
    agent, raw = [], []
    for _ in range(repetitions):
        before = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
        collect()
        agent.append(_cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - before)
        before = _cpu(resource.RUSAGE_CHILDREN)
        subprocess.run(["sh", "-c", RAW_OS_WORK], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        raw.append(_cpu(resource.RUSAGE_CHILDREN) - before)
    runner.stop()
    print(json.dumps({"agent": agent, "raw": raw}))


def cycle_cpu() -> tuple[float, float]:
    """Median CPU ms of one collection and of the raw OS work, from a fresh process."""
    done = subprocess.run([sys.executable, __file__, "--cycle-worker", str(REPETITIONS)],
                          capture_output=True, text=True, check=True, timeout=600)
    times = json.loads(done.stdout.splitlines()[-1])
    return statistics.median(times["agent"]) * 1000, statistics.median(times["raw"]) * 1000


def import_seconds() -> tuple[float, float]:
    """Median wall seconds of a fresh interpreter importing the agent's CLI, and of a bare one."""
    agent, bare = [], []
    for _ in range(3 if quick() else 7):
        for code, into in (("import farmwatch.agent.cli", agent), ("pass", bare)):
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            into.append(time.perf_counter() - began)
    return statistics.median(agent), statistics.median(bare)


def bare_rss() -> float:
    """Peak RSS (bytes) of a bare interpreter: the part of the agent's memory no code of ours can shed."""
    # VmHWM, not ru_maxrss: the latter carries the forking parent's peak across exec.
    code = "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout) * 1024


TRANSPORTS = ("http", "https, ca_file", "https, system CAs", "https, system CA bundle loaded whole")


def https_collector(folder: Path) -> tuple[subprocess.Popen[bytes], str, Path, Path]:
    """A real collector serving HTTPS with a throw-away CA's certificate: (process, url, enrol
    secret file, CA file); waits until a TLS handshake trusting that CA succeeds."""
    folder.mkdir(parents=True)
    pki = make_pki(folder / "pki")
    secret = folder / "enroll-secret"
    secret.write_text(secrets.token_urlsafe(24) + "\n")
    port = free_port()
    with open(folder / "collector.log", "wb") as log:
        server = subprocess.Popen(
            [*SERVE, "--host", "127.0.0.1", "--port", str(port), "--db", f"sqlite:///{folder / 'farmwatch.db'}",
             "--enroll-secret-file", str(secret), "--analyst-token-file", str(secret), "--log-level", "warning",
             "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key)],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    wait_for_tls(port, pki.ca, 600)
    return server, f"https://127.0.0.1:{port}", secret, pki.ca


def running_agent(folder: str, transport: str = "http") -> tuple[float, float, int]:
    """A real ``farmwatch-agent run`` to a real collector over ``transport`` (one of TRANSPORTS):
    CPU % of one core, peak RSS, peak USS (bytes)."""
    # As the agent's service starts: no OpenSSL overrides inherited from this shell (some set SSL_CERT_FILE).
    env = {name: value for name, value in os.environ.items() if name not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    options = []
    if transport == "http":
        collector = launch_collector(Path(folder) / "collector")
        url, secret, stop = collector.url, collector.enroll_secret_file, collector.stop
    else:
        server, url, secret, ca = https_collector(Path(folder) / "collector")

        def stop() -> None:
            server.terminate()
            server.wait(timeout=30)

        if transport == "https, ca_file":
            (Path(folder) / "agent.toml").write_text(f'[agent]\nca_file = "{ca}"\n')
            options = ["--config", f"{folder}/agent.toml"]
        elif transport == "https, system CAs":  # the system's hashed directory, with the test CA in it
            hashed = Path(folder) / "certs"
            system = Path(ssl.get_default_verify_paths().openssl_capath)
            shutil.copytree(system, hashed, symlinks=False, ignore=shutil.ignore_patterns("*.0", "*.1", "*.crt"))
            shutil.copy(ca, hashed / "farmwatch-test-ca.pem")
            subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)
            env["SSL_CERT_DIR"] = str(hashed)
        else:  # the system's bundle, with the test CA in it
            bundle = Path(folder) / "system-and-test-ca.pem"
            bundle.write_bytes(Path(ssl.get_default_verify_paths().openssl_cafile).read_bytes() + ca.read_bytes())
            env["SSL_CERT_FILE"] = str(bundle)
    try:
        agent = subprocess.Popen(
            [AGENT, "run", "--interval", str(INTERVAL_SECONDS), "--collector", url,
             "--enroll-secret-file", str(secret), "--state-dir", f"{folder}/state", *options],
            stderr=subprocess.DEVNULL, env=env,
        )
        process = psutil.Process(agent.pid)
        time.sleep(3)  # past start-up (imports, enrolment); the first report comes at INTERVAL_SECONDS
        before, started = process.cpu_times(), time.monotonic()
        peak = peak_unique = 0
        while time.monotonic() - started < STEADY_SECONDS:
            memory = process.memory_full_info()
            peak, peak_unique = max(peak, memory.rss), max(peak_unique, memory.uss)
            time.sleep(1)
        after, elapsed = process.cpu_times(), time.monotonic() - started
        agent.terminate()
        agent.wait(timeout=30)
    finally:
        stop()
    spent = sum(after[:4]) - sum(before[:4])  # user, system and the children's (the commands probes run)
    return 100 * spent / elapsed, peak, peak_unique


def report_bytes() -> tuple[int, int]:
    """One report from this machine: compact JSON bytes and gzip bytes, as the transport sends it."""
    printed = subprocess.run([AGENT, "once", "--print", "--window", "1"], capture_output=True, timeout=120).stdout
    report = json.dumps(json.loads(printed)).encode()
    return len(report), len(gzip.compress(report))


def compile_package() -> None:
    """As installed (pip, the .deb's frozen agent): bytecode compiled beforehand. In this shared tree
    modules change all day; compiling them at start-up added ~2 MB to the agent's peak RSS."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "farmwatch")], check=True)


def main() -> int:
    load_before = os.getloadavg()
    compile_package()
    agent_ms, raw_ms = cycle_cpu()
    imported, bare = import_seconds()
    compile_package()  # again: modules changed during the cycle runs would be compiled by the agents
    # The timed phases above ran alone. The agents' phase measures CPU seconds and memory over two
    # 60 s intervals, mostly waiting: run_all.py may score detection_quality's fleets beside it.
    with tempfile.TemporaryDirectory() as folder, ThreadPoolExecutor(len(TRANSPORTS)) as pool, idle_phase():
        running = {transport: pool.submit(running_agent, f"{folder}/{number}", transport)
                   for number, transport in enumerate(TRANSPORTS)}
        (cpu, peak, peak_unique), *over_https = [running[transport].result() for transport in TRANSPORTS]
    json_size, gzip_size = report_bytes()
    floor = bare_rss()
    load_after = os.getloadavg()
    publish([
        Figure("agent cycle cpu", agent_ms, "ms", baseline=raw_ms, baseline_is="ps + ss + ls usb as one sh",
               target=at_most(2, ratio=True)),
        # the 0.5 % target holds at a 60 s interval; the quick pass reports every 5 s
        Figure(f"agent cpu at {INTERVAL_SECONDS:g} s interval", cpu, "% core",
               target=at_most(0.5) if INTERVAL_SECONDS == 60 else None),
        Figure("agent peak rss", peak / 2**20, "MB", baseline=floor / 2**20, baseline_is="bare python",
               target=at_most(40)),
        Figure("agent peak uss", peak_unique / 2**20, "MB"),
        # The last transport is the comparison for how the agent reads CAs (never how it runs): no target.
        *[Figure(f"agent peak rss, {transport}", https_peak / 2**20, "MB", baseline=peak / 2**20,
                 baseline_is="the same agent over http, same run",
                 target=None if transport == TRANSPORTS[-1] else at_most(40))
          for transport, (_, https_peak, _) in zip(TRANSPORTS[1:], over_https)],
        Figure("agent peak rss, https, system CAs, read as needed", over_https[1][1] / 2**20, "MB",
               baseline=over_https[2][1] / 2**20, baseline_is="the system bundle loaded whole, same run"),
        Figure("report gzip (this machine)", gzip_size, "bytes", baseline=json_size, baseline_is="same report, JSON",
               target=at_most(4096)),
        Figure("agent import", imported * 1000, "ms", baseline=bare * 1000, baseline_is="bare python start"),
    ])
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores shared with other work); "
          f"cycle medians of {REPETITIONS} interleaved pairs")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cycle-worker"]:
        cycle_worker(int(sys.argv[2]))
        raise SystemExit(0)
    describe(__doc__)
    raise SystemExit(main())
