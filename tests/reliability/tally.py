"""The reliability suite's tally of what it tried (tests/reliability/conftest.py prints it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    inputs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    stored: int = 0
    server_errors: list[str] = field(default_factory=list)  # client input answered >= 500
    statuses: Counter[int] = field(default_factory=Counter)

    def answer(self, what: str, status: int, *, during_fault: bool = False) -> None:
        """Count one client input and its answer; a 5xx is remembered by name, unless a fault this
        suite injected (a killed process, a full disk) explains it: that 503 is the right answer."""
        self.inputs += 1
        self.statuses[status] += 1
        if status >= 500 and not during_fault:
            self.server_errors.append(f"{what}: {status}")

    def lines(self) -> list[str]:
        faults = ", ".join(f"{name} x{count}" for name, count in sorted(self.faults.items())) or "none"
        return [
            f"inputs tried:            {self.inputs} (answers: {dict(sorted(self.statuses.items()))})",
            f"faults injected:         {sum(self.faults.values())} ({faults})",
            f"reports acknowledged:    {self.acknowledged}",
            f"reports stored:          {self.stored} ({'equal' if self.stored == self.acknowledged else 'DIFFERENT'})",
            f"5xx for client input:    {len(self.server_errors)}" + (f" {self.server_errors[:5]}" if self.server_errors else ""),
        ]
