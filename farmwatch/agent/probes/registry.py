"""The probes the agent knows, by name. Adding a probe adds one line here and one file.

Entries are import paths, loaded lazily, so a probe whose OS library is missing becomes an
``errors[]`` entry instead of stopping the agent from starting.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Probe

PROBES: dict[str, str] = {
    "remote_access": "farmwatch.agent.probes.remote_access.probe:RemoteAccessProbe",
    "host": "farmwatch.agent.probes.host.probe:HostProbe",
    "hardware": "farmwatch.agent.probes.hardware.probe:HardwareProbe",
    "input": "farmwatch.agent.probes.input.probe:InputTimingProbe",
    "network": "farmwatch.agent.probes.network.probe:NetworkProbe",
    "sessions": "farmwatch.agent.probes.sessions.probe:SessionsProbe",
}


def load_probe(name: str) -> type[Probe[Any]]:
    """The probe class registered under ``name``."""
    module_name, _, class_name = PROBES[name].partition(":")
    probe: type[Probe[Any]] = getattr(importlib.import_module(module_name), class_name)
    return probe
