"""The reliability suite's tally: every scenario adds what it tried, and pytest prints the sum.

Printed at the end of every run that includes tests/reliability (even with -q): inputs tried,
faults injected, reports acknowledged vs stored, and answers >= 500 to client input (must be 0).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The collector tests' helpers (a valid report, auth headers) serve this suite too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector"))

from tally import Tally  # noqa: E402


TALLY = Tally()


@pytest.fixture
def tally() -> Tally:
    return TALLY


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.inputs or TALLY.faults:
        terminalreporter.section("farmwatch reliability summary")
        for line in TALLY.lines():
            terminalreporter.write_line(line)
