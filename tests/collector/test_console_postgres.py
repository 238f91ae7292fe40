"""The console on PostgreSQL (the scale-out store): accounts, sessions, the fleet index, a
suppression honoured by scoring, the audit log and onboarding, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
from collector_helpers import auth, report_for
from collector_process import RunningCollector
from console_helpers import add_analyst, signed_in

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_console_on_postgresql(postgres: str, collector_factory: Callable[..., RunningCollector]) -> None:
    collector = collector_factory(database=postgres)
    add_analyst(collector)
    device = collector.enrol(hardware_id="hw-console-pg", hostname="tp-pg")
    device_id = str(device["device_id"])
    assert httpx.post(f"{collector.url}/api/v1/reports", json=report_for(device_id, 1),
                      headers=auth(device["token"])).status_code == 202
    analyst = auth(collector.analyst_token)
    before = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst, timeout=120).json()
    assert any(f["detector"] == "remote_access" for f in before["findings"])

    client, csrf = signed_in(collector)
    fleet = client.get("/console/fleet?q=tp-pg&detector=remote_access").text
    assert device_id in fleet and "1 device " in fleet
    assert client.get("/console/fleet?q=a%00b").status_code == 422
    assert client.get(f"/console/devices/{device_id}").status_code == 200
    assert client.post(f"/console/devices/{device_id}/suppress", data={
        "csrf_token": csrf, "detector": "remote_access", "reason": "IT's own RustDesk", "days": "7"}).status_code == 303
    after = httpx.get(f"{collector.url}/api/v1/devices/{device_id}", headers=analyst, timeout=120).json()
    assert not any(f["detector"] == "remote_access" for f in after["findings"])
    assert device_id not in client.get("/console/fleet?detector=remote_access").text

    assert httpx.post(f"{collector.url}/api/v1/verify", json={"seconds": 5}, headers=auth(device["token"]),
                      timeout=120).status_code == 200
    assert "tp-pg" in client.get("/console/onboarding").text
    audit = subprocess.run([sys.executable, "-m", "farmwatch.collector.cli", "audit", "list", "--db", postgres],
                           capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"\talice\tsuppress\t" + device_id, audit) and "\talice\tsign_in\t" in audit
