"""What the agent costs on this machine, against its budget.

Budget: a tenth of what osquery's watchdog allows by default (200 MB memory, 10% of one core
sustained; osquery docs, "watchdog" flags), i.e. 20 MB and 1% of a core. Measures a real
``farmwatch-agent run`` reporting to a real collector on loopback: CPU share and peak RSS over a
steady stretch, plus the size of one report as sent (JSON, gzip).
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from collector_process import launch_collector  # noqa: E402  (the tests' real-collector launcher)

BUDGET_RSS_MB = 200 / 10
BUDGET_CPU_PERCENT = 10 / 10
INTERVAL_SECONDS = 5
MEASURE_SECONDS = 60
AGENT = str(Path(sys.executable).parent / "farmwatch-agent")


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        collector = launch_collector(Path(folder) / "collector")
        try:
            agent = subprocess.Popen(
                [AGENT, "run", "--interval", str(INTERVAL_SECONDS), "--collector", collector.url,
                 "--enroll-secret-file", str(collector.enroll_secret_file), "--state-dir", f"{folder}/state"],
                stderr=subprocess.DEVNULL,
            )
            process = psutil.Process(agent.pid)
            time.sleep(INTERVAL_SECONDS + 1)  # past start-up and the first report
            before, started = process.cpu_times(), time.monotonic()
            peak = peak_unique = 0
            while time.monotonic() - started < MEASURE_SECONDS:
                memory = process.memory_full_info()
                peak, peak_unique = max(peak, memory.rss), max(peak_unique, memory.uss)
                time.sleep(1)
            after, elapsed = process.cpu_times(), time.monotonic() - started
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        finally:
            collector.stop()
    cpu = 100 * (after.user + after.system - before.user - before.system) / elapsed
    printed = subprocess.run([AGENT, "once", "--print", "--window", "1"], capture_output=True, timeout=120).stdout
    report = json.dumps(json.loads(printed)).encode()  # compact, as the transport spools and sends it
    print(f"agent run, one report every {INTERVAL_SECONDS} s, measured {elapsed:.0f} s:")
    print(f"  cpu        {cpu:6.2f} % of one core   (budget {BUDGET_CPU_PERCENT:g} %; at the default "
          f"300 s interval the per-report work is {300 // INTERVAL_SECONDS}x rarer)")
    print(f"  peak rss   {peak / 2**20:6.1f} MB            (budget {BUDGET_RSS_MB:g} MB)")
    print(f"  peak uss   {peak_unique / 2**20:6.1f} MB            (pages only the agent holds: RSS without the "
          "shared libraries and interpreter pages other processes map too)")
    print(f"  report     {len(report)} bytes JSON, {len(gzip.compress(report))} bytes gzip as sent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
