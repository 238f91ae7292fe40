"""The distribution's layout: every package folder is declared, so a wheel ships all of it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = config["package-dir"]
    on_disk = set()
    for init in ROOT.glob("*/**/__init__.py"):
        folder = init.parent.relative_to(ROOT).as_posix()
        if folder.split("/")[0] in {"tests", "bench", "build", ".venv"}:
            continue
        on_disk.add(folder)
    declared_folders = {mapped[name] for name in config["packages"]}
    assert on_disk == declared_folders
    assert set(config["packages"]) == set(mapped)
