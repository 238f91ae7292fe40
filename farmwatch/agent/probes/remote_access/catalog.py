"""The remote-access catalogue as lookups: name, install folder, service, signer, relay domain → tool id.

Reads ``agent/data/rmm_catalog.json`` (built by ``deploy/dev/build_rmm_catalog.py`` from LOLRMM plus
vendor-documented facts; its header says where each fact comes from) once, and keeps only the lookup
tables, not the JSON: the agent's memory matters more than a few microseconds per lookup. Install
folders without wildcards (most of them) are a dict looked up with each ancestor of a path; only the
rest become one regex, since compiling all of them into one cost the agent ~3 MB of resident memory
for good (issue 13).
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


def _drive_free(path: str) -> str:
    """A path key with its drive letter (``c:/...``) written ``?:``, as literal folders spell any drive."""
    return "?" + path[1:] if path[1:2] == ":" else path


def _has_wildcard(folder: str) -> bool:
    """Whether a folder needs the regex: ``*`` anywhere, or ``?`` other than a leading any-drive ``?:``."""
    return "*" in folder or "?" in _drive_free(folder)[1:]


def _folder_regex(folders: list[tuple[int, str]]) -> re.Pattern[str] | None:
    """One regex matching a path under any of these folders (``?`` one character, ``*`` any text);
    group ``f<i>`` is catalogue folder i, and alternatives keep catalogue order, so the first that
    matches is the earliest folder that does."""
    alternatives = []
    for index, folder in folders:
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in folder)
        alternatives.append(f"(?P<f{index}>{body}/.*)")
    return re.compile("|".join(alternatives), re.DOTALL) if alternatives else None


@dataclass(frozen=True)
class Catalog:
    """Lookup tables built from the catalogue JSON."""

    names: dict[str, str]
    services: dict[str, str]
    signers: dict[str, str]
    domains: dict[str, str]
    addresses: dict[str, str]
    kinds: dict[str, str]
    folders: dict[str, int]  # wildcard-free folder ("?:" for any drive) -> its index in folder_owners
    folder_pattern: re.Pattern[str] | None  # the folders with wildcards
    folder_owners: list[str]  # tool of each catalogue folder, in catalogue order

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        def table(field: str, key: Any = str.lower) -> dict[str, str]:
            return {key(value): tool["id"] for tool in data["tools"] for value in tool.get(field, [])}

        listed = [(folder, tool["id"]) for tool in data["tools"] for folder in tool.get("folders", [])]
        literal: dict[str, int] = {}
        for index, (folder, _) in enumerate(listed):
            if not _has_wildcard(folder):
                literal.setdefault(_drive_free(folder), index)
        return cls(
            names=table("processes", process_key), services=table("services"), signers=table("signers"),
            domains=table("domains"), addresses=table("addresses"),
            kinds={tool["id"]: tool.get("kind", "remote_control") for tool in data["tools"]},
            folders=literal,
            folder_pattern=_folder_regex([(i, folder) for i, (folder, _) in enumerate(listed) if _has_wildcard(folder)]),
            folder_owners=[tool for _, tool in listed],
        )

    def by_name(self, process_name: str) -> str | None:
        """The tool whose executable has this name."""
        return self.names.get(process_key(process_name))

    def by_path(self, executable: str) -> str | None:
        """The tool whose install folder holds this executable (at any depth); where several folders
        hold it, the one listed first in the catalogue."""
        path = path_key(executable)
        first: int | None = None
        keyed = _drive_free(path)
        cut = keyed.find("/")
        while cut != -1:  # each ancestor folder of the path
            index = self.folders.get(keyed[:cut])
            if index is not None and (first is None or index < first):
                first = index
            cut = keyed.find("/", cut + 1)
        found = self.folder_pattern.fullmatch(path) if self.folder_pattern is not None else None
        if found and found.lastgroup and (first is None or int(found.lastgroup[1:]) < first):
            first = int(found.lastgroup[1:])
        return self.folder_owners[first] if first is not None else None

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
