"""Console-script entry points that say which extra to install when one is missing.

The agent installs without pandas, scikit-learn or FastAPI; running a collector-side command on
such an install should print one line naming the extra, not a traceback.
"""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable

_EXTRA_OF = {"agent": "agent", "collector": "collector", "detect": "collector", "simulate": "collector"}


def _launch(command: str, module: str, frozen_at_exit: bool = False) -> Callable[[], int]:
    """The console script of ``module``'s ``main``. ``frozen_at_exit``: once it returns, every object
    left is frozen (:func:`gc.freeze`), for a command that ends there: the interpreter's shutdown
    then skips collecting them, which took 0.3-0.8 s after farmwatch-detect's work (with pandas,
    scikit-learn and scipy imported; 0.05 s frozen), all of it while the machine's other cores
    idle. Objects in reference cycles are then left to the system, which reclaims the process."""

    def main() -> int:
        try:  # commands import some libraries lazily (e.g. serve -> uvicorn), so guard the run too
            result: int = importlib.import_module(module).main()
        except ModuleNotFoundError as missing:
            if (missing.name or "").split(".")[0] == "farmwatch":
                raise
            extra = _EXTRA_OF[command]
            print(
                f"farmwatch-{command}: the '{missing.name}' package is missing; "
                f"install the extra with: pip install 'farmwatch[{extra}]'",
                file=sys.stderr,
            )
            return 3
        if frozen_at_exit:
            gc.freeze()
        return result

    return main


agent = _launch("agent", "farmwatch.agent.cli")
collector = _launch("collector", "farmwatch.collector.cli")
detect = _launch("detect", "farmwatch.detectors.cli", frozen_at_exit=True)
simulate = _launch("simulate", "farmwatch.simulator.cli")
