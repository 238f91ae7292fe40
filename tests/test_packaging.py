"""The distribution's layout: every package and data folder is declared, so a wheel ships all of it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_declared() -> None:
    mapped = CONFIG["package-dir"]
    code_folders = set()
    for init in ROOT.glob("*/**/__init__.py"):
        folder = init.parent.relative_to(ROOT).as_posix()
        if folder.split("/")[0] in {"tests", "bench", "build", ".venv"}:
            continue
        code_folders.add(folder)
    declared = {mapped[name] for name in CONFIG["packages"]}
    assert set(CONFIG["packages"]) == set(mapped)
    data_only = declared - code_folders
    assert code_folders <= declared
    # A declared folder without code must hold data, and say which files ship.
    assert all((ROOT / folder).is_dir() for folder in data_only)
    assert {mapped[name] for name in CONFIG["package-data"]} == data_only


@pytest.mark.slow
def test_the_wheel_holds_every_data_file(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    assert "BuildBackendWarning" not in built.stderr, built.stderr
    [wheel] = tmp_path.glob("farmwatch-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    mapped = CONFIG["package-dir"]
    expected = {
        f"{package.replace('.', '/')}/{path.name}"
        for package in CONFIG["package-data"]
        for path in (ROOT / mapped[package]).iterdir() if path.is_file()
    }
    assert expected and expected <= shipped
