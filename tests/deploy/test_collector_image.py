"""The collector image builds from deploy/collector/Containerfile and its container serves.

Registries cannot be reached from here, so the base image is made from Debian packages
(``mmdebstrap`` → ``podman import``, cached like the agent test's root) and handed to the build
through the ``BASE`` argument the shipped file defaults to the official Python image with. The
build installs the collector from PyPI with the host's CA bundle mounted, as pip here trusts it.
Rootful podman on this kind of machine needs ``--runtime runc`` and explicit ulimits (its
defaults are refused). The container is reached only on a 127.0.0.1 port mapping.

About two and a half minutes on 2 cores the first time (base image and build), less when
podman's layer cache holds the build.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from collector_process import free_port
from podman_images import collector_image, missing_tools, podman, run_flags
from prometheus_client.parser import text_string_to_metric_families

IMAGE = "localhost/farmwatch-collector:test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman needs root"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"missing {', '.join(missing_tools())} "
                       "(Debian packages in deploy/dev/system-packages.txt)"),
]


@pytest.fixture(scope="module")
def image() -> str:
    return collector_image(IMAGE)


@pytest.fixture
def container(image: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The image's default command, its two secrets mounted where its config expects them."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("enroll-secret", "analyst-token"):
        (secrets / name).write_text(os.urandom(24).hex())
        (secrets / name).chmod(0o644)  # the image's user is uid 10001
    port = free_port()
    name = f"farmwatch-test-{port}"
    podman("run", "--detach", "--name", name, *run_flags(), "--publish", f"127.0.0.1:{port}:8765",
            "--volume", f"{secrets / 'enroll-secret'}:/run/secrets/enroll-secret:ro",
            "--volume", f"{secrets / 'analyst-token'}:/run/secrets/analyst-token:ro", image)
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True, timeout=120)


def test_the_image_answers_healthz_and_metrics_as_a_non_root_user(container: tuple[str, str]) -> None:
    name, url = container
    deadline, status = time.monotonic() + 60, None
    while time.monotonic() < deadline and status != 200:
        try:
            status = httpx.get(f"{url}/healthz", timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.5)
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stderr
    assert status == 200, logs
    metrics = httpx.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200
    names = {family.name for family in text_string_to_metric_families(metrics.text)}
    assert {"farmwatch_reports_accepted", "farmwatch_devices"} <= names
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    # the image's own HEALTHCHECK passes too
    podman("healthcheck", "run", name)
