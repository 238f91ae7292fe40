"""The VPN product catalogue (``farmwatch/agent/data/vpn_catalog.json``): names from interfaces and processes.

Operators hide their route behind consumer VPNs (DOJ laptop-farm cases name Astrill), while a
corporate VPN is a false friend the detectors allowlist; either way the product's name is what
an analyst needs. Each catalogue entry carries its source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from importlib.resources import files

CATALOG_PATH = files("farmwatch.agent") / "data" / "vpn_catalog.json"
_COMM_LENGTH = 15  # Linux truncates /proc/<pid>/comm to 15 characters (TASK_COMM_LEN - 1)


@dataclass(frozen=True)
class VpnProduct:
    """One catalogue entry."""

    id: str
    product: str  # what the report's vpn_product carries
    interfaces: tuple[str, ...]  # fnmatch patterns on interface names
    drivers: tuple[str, ...]  # kernel driver or uevent DEVTYPE
    processes: tuple[str, ...]  # client process names
    source: str  # where these names come from

    def names_interface(self, name: str, driver: str | None) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self.interfaces) or (
            driver is not None and driver in self.drivers
        )

    def names_process(self, seen: set[str], cut: list[str]) -> bool:
        """Whether a client process runs: ``seen`` holds process names in lower case without
        ``.exe``, ``cut`` those of them Linux cut to 15 characters (a prefix of the full name)."""
        for name in self.processes:
            name = name.lower()
            if name in seen or any(name.startswith(prefix) for prefix in cut):
                return True
        return False


@cache
def load_catalog() -> tuple[VpnProduct, ...]:
    """The packaged catalogue, in match order (specific products before generic protocols); read once."""
    raw = json.loads(CATALOG_PATH.read_text("utf-8"))
    return tuple(
        VpnProduct(
            id=entry["id"], product=entry["product"], interfaces=tuple(entry["interfaces"]),
            drivers=tuple(entry["drivers"]), processes=tuple(entry["processes"]), source=entry["source"],
        )
        for entry in raw["products"]
    )


def product_of_interface(catalog: Iterable[VpnProduct], name: str, driver: str | None) -> VpnProduct | None:
    """The first product whose interface pattern or driver names this interface."""
    return next((product for product in catalog if product.names_interface(name, driver)), None)


def products_running(catalog: Iterable[VpnProduct], process_names: Iterable[str]) -> list[VpnProduct]:
    """Products with a client process among ``process_names``, in catalogue order."""
    seen = {name.lower().removesuffix(".exe") for name in process_names}
    cut = [name for name in seen if len(name) == _COMM_LENGTH]
    return [product for product in catalog if product.names_process(seen, cut)]
