"""One shape for every benchmark's figures, so ``bench/run_all.py`` prints one table and writes JSON.

A script under bench/ measures, then hands its figures to :func:`publish`::

    from report import Figure, at_least, publish, quick

    rounds = 200 if quick() else 5_000      # --quick (CI): only show that the benchmark still runs
    ...
    publish([Figure("ingest, sqlite", rate, "reports/s", baseline=floor, baseline_is="parse-and-discard",
                    target=at_least(1_500))])

``publish`` prints the script's own rows at once (a script run alone shows its table) and keeps
them for ``run_all.py``, which prints every row in one table (figure, value, baseline, ratio,
target, met/missed) and writes ``bench/results.json``. A baseline is measured in the same run as
its figure, on the same machine, so the ratio holds even when other work shares the cores.
A target bounds the value (``at_least(1_500)``) or the ratio to the baseline (``at_least(0.5,
ratio=True)``); a figure without one is printed for information.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

QUICK_ENV = "FARMWATCH_BENCH_QUICK"
"""Set to 1 (``run_all.py --quick``) for the shortened pass CI runs: small sizes, figures not quotable."""
FIGURES_ENV = "FARMWATCH_BENCH_FIGURES"
"""A file path: a script run_all.py starts as a child process (beside another) also appends every
figure it publishes there, one JSON object a line (:func:`read_figures` reads them back)."""


def describe(doc: str | None) -> None:
    """The command line of a script that takes no options: ``--help`` prints its docstring (what it
    measures, against what), and any other argument is refused."""
    argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


def quick() -> bool:
    """True during the shortened pass: benchmarks shrink their sizes to show they still run."""
    return os.environ.get(QUICK_ENV) == "1"


@dataclass(frozen=True)
class Target:
    """A bound on a figure's value, or on its ratio to the baseline when ``of_ratio``."""

    bound: float
    at_most: bool = False  # False: the figure must reach at least ``bound``
    of_ratio: bool = False

    def met(self, value: float, ratio: float | None) -> bool | None:
        """Whether ``value`` (or ``ratio``) is within the bound; None when the ratio is unknown."""
        checked = ratio if self.of_ratio else value
        if checked is None:
            return None
        return checked <= self.bound if self.at_most else checked >= self.bound

    def describe(self, unit: str) -> str:
        sign = "<=" if self.at_most else ">="
        return f"{sign} {number(self.bound)}x baseline" if self.of_ratio else f"{sign} {number(self.bound)} {unit}"


def at_least(bound: float, *, ratio: bool = False) -> Target:
    return Target(bound, at_most=False, of_ratio=ratio)


def at_most(bound: float, *, ratio: bool = False) -> Target:
    return Target(bound, at_most=True, of_ratio=ratio)


@dataclass(frozen=True)
class Figure:
    """One measured figure, beside the baseline measured in the same run (if it has one)."""

    figure: str
    value: float
    unit: str
    baseline: float | None = None  # in the same unit as ``value``
    baseline_is: str = ""  # what the baseline measures, e.g. "parse-and-discard endpoint"
    target: Target | None = None
    bench: str = ""  # the script that measured it; publish() fills it in

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        """True/False against the target; None when there is no target (information only)."""
        return None if self.target is None else self.target.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench, "figure": self.figure, "value": self.value, "unit": self.unit,
            "baseline": self.baseline, "baseline_is": self.baseline_is, "ratio": self.ratio,
            "target": None if self.target is None else self.target.describe(self.unit), "met": self.met,
        }


PUBLISHED: list[Figure] = []
"""Every figure published in this process, in order (run_all.py runs the scripts in-process)."""


def publish(figures: list[Figure]) -> None:
    """Print ``figures`` as a table and keep them for run_all.py's summary and results.json."""
    bench = Path(sys.argv[0]).stem
    named = [replace(figure, bench=figure.bench or bench) for figure in figures]
    PUBLISHED.extend(named)
    if os.environ.get(FIGURES_ENV):
        with open(os.environ[FIGURES_ENV], "a") as out:
            out.writelines(json.dumps(asdict(figure)) + "\n" for figure in named)
    print(table(named), flush=True)


def read_figures(path: Path) -> list[Figure]:
    """The figures a child process published into ``path`` (see :data:`FIGURES_ENV`)."""
    figures = []
    for line in path.read_text().splitlines():
        fields = json.loads(line)
        target = fields.pop("target")
        figures.append(Figure(**fields, target=None if target is None else Target(**target)))
    return figures


IDLE_PHASE_STARTED: list[Callable[[], None]] = []
"""Called when a script enters :func:`idle_phase` (run_all.py starts a counts-only script there)."""


@contextmanager
def idle_phase() -> Iterator[None]:
    """Wrap a phase of a benchmark that mostly waits and measures only CPU seconds a process used or
    its memory, never wall time (bench/agent_cost.py's agents reporting every 60 s). run_all.py may
    start a benchmark whose figures are counts, not timings (detection_quality), beside it; the
    script's own timed phases stay alone, and run_all waits for that benchmark before the next one."""
    for started in IDLE_PHASE_STARTED:
        started()
    yield


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[met]


COLUMNS = ("figure", "value", "baseline", "ratio", "target", "result", "baseline is")


def rows(figures: list[Figure]) -> list[tuple[str, ...]]:
    return [
        (
            f.figure,
            f"{number(f.value)} {f.unit}",
            "-" if f.baseline is None else f"{number(f.baseline)} {f.unit}",
            "-" if f.ratio is None else f"{f.ratio:.2f}x",
            "-" if f.target is None else f.target.describe(f.unit),
            verdict(f.met),
            f.baseline_is or "-",
        )
        for f in figures
    ]


def table(figures: list[Figure]) -> str:
    """A plain-text table, one figure a line, columns aligned."""
    lines = [COLUMNS, *rows(figures)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def markdown(figures: list[Figure]) -> str:
    """The same table in Markdown (the README's Performance section)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows(figures)]
    return "\n".join(lines)
