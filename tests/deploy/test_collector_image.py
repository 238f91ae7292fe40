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

import hashlib
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from collector_process import free_port
from debian_root import APT_SOURCES, cache_dir
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
IMAGE = "localhost/farmwatch-collector:test"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman needs root"),
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("mmdebstrap") is None,
                       reason="podman and mmdebstrap are not installed (deploy/dev/system-packages.txt)"),
]


def _limits() -> list[str]:
    """Explicit ulimits within this process's own hard limits (podman's defaults are refused here)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = min(nofile, 65536) if nofile != resource.RLIM_INFINITY else 65536
    nproc = min(nproc, 8192) if nproc != resource.RLIM_INFINITY else 8192
    return ["--runtime", "runc", "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _podman(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *argv], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _base_image() -> str:
    """A Debian bookworm image with Python, made from Debian packages and cached as a tarball."""
    recipe = hashlib.sha256(repr(BASE_PACKAGES).encode() + APT_SOURCES.read_bytes()).hexdigest()[:12]
    tag = f"localhost/farmwatch-test-base:{recipe}"
    if subprocess.run(["podman", "image", "exists", tag]).returncode == 0:
        return tag
    tarball = cache_dir() / f"debian-bookworm-python-{recipe}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--mode=root", "--variant=minbase",
                        f"--include={','.join(BASE_PACKAGES)}", "bookworm", str(partial), str(APT_SOURCES)],
                       check=True, timeout=900)
        partial.rename(tarball)
    _podman("import", str(tarball), tag)
    return tag


@pytest.fixture(scope="module")
def image() -> str:
    base = _base_image()
    _podman("build", *_limits(), "--format", "docker", "--network", "host",
            "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--env", f"PIP_CERT={CA_BUNDLE}",
            "--build-arg", f"BASE={base}", "--file", "deploy/collector/Containerfile", "--tag", IMAGE, str(REPO))
    return IMAGE


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
    _podman("run", "--detach", "--name", name, *_limits(), "--publish", f"127.0.0.1:{port}:8765",
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
    assert _podman("exec", name, "id", "-u").stdout.strip() == "10001"
    # the image's own HEALTHCHECK passes too
    _podman("healthcheck", "run", name)
