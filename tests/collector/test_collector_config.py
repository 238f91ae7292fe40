"""collector.toml parsing: every documented key lands where it should, and flags override the file."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from farmwatch.collector.config import ConfigError, load_config


def test_full_config_and_flag_override(tmp_path: Path) -> None:
    (tmp_path / "secret-a").write_text("a" * 20 + "\n")
    (tmp_path / "secret-b").write_text("b" * 20)
    (tmp_path / "token").write_text("t" * 24)
    config_file = tmp_path / "collector.toml"
    config_file.write_text(f"""
[collector]
enroll_secret_file = "{tmp_path / 'secret-a'}"
analyst_token_file = "{tmp_path / 'token'}"
max_report_bytes   = 2048
trusted_proxies    = ["10.0.0.0/8"]

[detection]
interval_seconds = 60
lookback_hours   = 24
batch_devices    = 50
scoring_processes = 2
review_threshold = 0.4
[detection.detectors.remote_access]
weight = 2

[geo]
corporate_networks = ["198.51.100.0/24"]

[agent]
interval_seconds = 120
[agent.probe_options.network]
samples = 3

[[outputs]]
type = "syslog"
url = "tcp://127.0.0.1:6514"
""")
    config = load_config(config_file, enroll_secret_file=tmp_path / "secret-b")
    assert config.enroll_secret == "b" * 20  # the flag wins over the file
    assert config.analyst_token == "t" * 24
    assert config.max_report_bytes == 2048
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert (config.detection_interval_seconds, config.lookback_hours, config.batch_devices) == (60.0, 24.0, 50)
    assert config.scoring_processes == 2
    assert config.detection.review_threshold == 0.4
    assert config.detection.params("remote_access") == {"weight": 2}
    assert config.detection.corporate_networks == ("198.51.100.0/24",)
    assert (config.agent_interval_seconds, config.probe_options) == (120, {"network": {"samples": 3}})
    [output] = config.outputs
    assert (output.name, output.type, output.format, output.url, output.min_verdict) == (
        "syslog", "syslog", "cef", "tcp://127.0.0.1:6514", "review")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param("[collector]\nmax_report_bytes = 10\n", "max_report_bytes: must be an integer >= 1024", id="tiny-cap"),
        pytest.param("[detection]\ninterval_seconds = 0\n", "interval_seconds: must be a positive number", id="zero-interval"),
        pytest.param("[detection]\nbatch_devices = 0\n", "batch_devices: must be an integer >= 1", id="no-batch"),
        pytest.param("[detection]\nscoring_processes = -1\n", "scoring_processes: must be an integer from 0 to 64",
                     id="negative-processes"),
        pytest.param("[detection]\nscoring_processes = 65\n", "scoring_processes: must be an integer from 0 to 64",
                     id="too-many-processes"),
        pytest.param("[detection]\nscoring_processes = \"2\"\n", "scoring_processes: must be an integer", id="text-processes"),
        pytest.param("[detection]\nscoring_processes = true\n", "scoring_processes: must be an integer", id="bool-processes"),
        pytest.param("[detection]\nrandom_state = 1.5\n", "random_state: must be an integer", id="float-seed"),
        pytest.param("[detection]\ndetectors = 3\n", "detectors: must map detector names", id="detectors-not-table"),
        pytest.param("[agent]\nprobe_options = {network = 1}\n", "probe_options: must map probe names", id="probe-options"),
        pytest.param("[alerts]\n", "unknown table [alerts]", id="unknown-table"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "s").write_text("s" * 20)
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.toml", enroll_secret_file=tmp_path / "s", analyst_token_file=tmp_path / "s")
    assert words in str(caught.value)


def test_a_scoring_process_does_not_import_the_consoles_openid_client() -> None:
    """A scoring child imports the scorer and the config module (its config arrives pickled); the
    OpenID client and the console's accounts (an argon2 hash at import: 64 MiB, a sixth of a second)
    are imported only where ``[console.oidc]`` is parsed."""
    heavy = ("authlib", "farmwatch.collector.console.oidc", "farmwatch.collector.console.accounts")
    code = f"import sys, farmwatch.collector.scoring_process; print([m for m in {heavy!r} if m in sys.modules])"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"
