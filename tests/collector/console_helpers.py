"""Helpers for the console tests: make an analyst with the real CLI, sign in over real HTTP."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
from collector_process import RunningCollector

PASSWORD = "correct horse battery staple"


def add_analyst(collector: RunningCollector, name: str = "alice", password: str = PASSWORD) -> None:
    """``farmwatch-collector analysts add NAME`` with the password on standard input (not a terminal)."""
    done = subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "analysts", "add", name, "--db",
                           collector.db_url], input=password + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def signed_in(collector: RunningCollector, name: str = "alice", password: str = PASSWORD) -> tuple[httpx.Client, str]:
    """A client holding a console session, and that session's CSRF token."""
    client = httpx.Client(base_url=collector.url, timeout=60)
    form = client.get("/console/login")
    answer = client.post("/console/login", data={"csrf_token": csrf_of(form.text), "name": name, "password": password,
                                                 "next": "/console/fleet"})
    assert answer.status_code == 303, answer.text
    fleet = client.get("/console/fleet")
    assert fleet.status_code == 200
    return client, csrf_of(fleet.text)
