"""The remote-access catalogue as lookups: name, install folder, service, signer, relay domain → tool id.

Reads ``agent/data/rmm_catalog.json`` (built by ``deploy/dev/build_rmm_catalog.py`` from LOLRMM plus
vendor-documented facts; its header says where each fact comes from) once, and keeps only the lookup
tables, not the JSON: the agent's memory matters more than a few microseconds per lookup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import Any

CATALOG_PATH = files("farmwatch.agent") / "data" / "rmm_catalog.json"


def process_key(name: str) -> str:
    """How names compare: case-insensitive, without a trailing ``.exe``."""
    key = name.strip().lower()
    return key[:-4] if key.endswith(".exe") else key


def path_key(path: str) -> str:
    """How executable paths compare with catalogue folders: lower case, ``/``-separated."""
    return path.strip().lower().replace("\\", "/")


def _folder_regex(folders: list[tuple[str, str]]) -> tuple[re.Pattern[str] | None, list[str]]:
    """One regex matching a path under any folder (``?`` one character, ``*`` any text); group i is tool i."""
    alternatives: list[str] = []
    owners: list[str] = []
    for folder, tool in folders:
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in folder)
        alternatives.append(f"(?P<f{len(owners)}>{body}/.*)")
        owners.append(tool)
    if not alternatives:
        return None, owners
    return re.compile("|".join(alternatives), re.DOTALL), owners


@dataclass(frozen=True)
class Catalog:
    """Lookup tables built from the catalogue JSON."""

    names: dict[str, str]
    services: dict[str, str]
    signers: dict[str, str]
    domains: dict[str, str]
    addresses: dict[str, str]
    kinds: dict[str, str]
    folder_pattern: re.Pattern[str] | None
    folder_owners: list[str]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        def table(field: str, key: Any = str.lower) -> dict[str, str]:
            return {key(value): tool["id"] for tool in data["tools"] for value in tool.get(field, [])}

        pattern, owners = _folder_regex([(f, t["id"]) for t in data["tools"] for f in t.get("folders", [])])
        return cls(
            names=table("processes", process_key), services=table("services"), signers=table("signers"),
            domains=table("domains"), addresses=table("addresses"),
            kinds={tool["id"]: tool.get("kind", "remote_control") for tool in data["tools"]},
            folder_pattern=pattern, folder_owners=owners,
        )

    def by_name(self, process_name: str) -> str | None:
        """The tool whose executable has this name."""
        return self.names.get(process_key(process_name))

    def by_path(self, executable: str) -> str | None:
        """The tool whose install folder holds this executable (at any depth)."""
        if self.folder_pattern is None:
            return None
        found = self.folder_pattern.fullmatch(path_key(executable))
        return self.folder_owners[int(found.lastgroup[1:])] if found and found.lastgroup else None

    def by_service(self, service: str) -> str | None:
        """The tool that installs this Windows service, systemd unit or launchd label."""
        return self.services.get(service.strip().lower())

    def by_signer(self, subject: str) -> str | None:
        """The tool whose publisher signs with this subject name."""
        return self.signers.get(subject.strip().lower())

    def by_domain(self, name: str) -> tuple[str, str] | None:
        """(tool, catalogued domain) when ``name`` is a catalogued domain or under one; else None."""
        labels = name.strip().lower().rstrip(".").split(".")
        for start in range(len(labels) - 1):
            suffix = ".".join(labels[start:])
            if suffix in self.domains:
                return self.domains[suffix], suffix
        return None

    def by_address(self, address: str) -> str | None:
        """The tool whose relay has this literal address in the catalogue."""
        return self.addresses.get(address)


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The shipped catalogue, loaded once."""
    return Catalog.from_json(json.loads(CATALOG_PATH.read_text("utf-8")))
