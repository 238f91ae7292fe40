"""The distribution's layout: every package sits where its import says, and a wheel ships all of it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_no_package_dir_remap() -> None:
    """A module lives where its import says: no folder is mapped onto another package name."""
    assert "package-dir" not in CONFIG
    assert CONFIG["packages"]["find"]["include"] == ["farmwatch*"]
    stray = [init.parent.name for init in ROOT.glob("*/__init__.py")]
    assert stray == ["farmwatch"]


def test_every_data_folder_ships() -> None:
    """A folder of data files under the package is listed in package-data, and every listed one exists."""
    data_folders = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in (ROOT / "farmwatch").rglob("*")
        if folder.is_dir() and folder.name != "__pycache__" and not (folder / "__init__.py").exists()
    }
    assert data_folders == set(CONFIG["package-data"])


def test_the_package_states_the_version_the_distribution_has() -> None:
    """Agents report farmwatch.__version__ (no metadata lookup); the packages are built from pyproject's."""
    import farmwatch

    assert farmwatch.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.slow
def test_the_wheel_holds_every_data_file(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    assert "BuildBackendWarning" not in built.stderr, built.stderr
    [wheel] = tmp_path.glob("farmwatch-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{package.replace('.', '/')}/{path.name}"
        for package in CONFIG["package-data"]
        for path in (ROOT / package.replace(".", "/")).iterdir() if path.is_file()
    }
    assert expected and expected <= shipped
    assert "farmwatch/detectors/signals/ipkvm.py" in shipped
