"""The probe interface: one class per file, one report section per probe.

Like an osquery table, a probe declares what it reads (module docstring) and returns typed
records (models from :mod:`farmwatch.contract`). OS access is injected through
:class:`ProbeContext` (``proc_root``, ``sys_root``, ``dev_root``, ``run``, ``clock``) so tests replay captured
trees instead of mocking. The runner turns anything a probe raises into an ``errors[]`` entry;
a probe that could run only partly records why with :meth:`Probe.problem` and still returns
what it saw.
"""

from __future__ import annotations

import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from farmwatch.agent.kernel.shared_reads import KernelReads
from farmwatch.contract import Anchor
from farmwatch.errors import FarmwatchError

RunCommand = Callable[[Sequence[str]], str]
"""Runs a command and returns its stdout; raises ``OSError``/``subprocess.CalledProcessError``."""


def run_command(argv: Sequence[str], timeout: float = 10.0) -> str:
    """The default :data:`RunCommand`: no shell, bounded time, text output."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


class ProbeUnavailable(FarmwatchError):
    """The probe cannot run on this OS or with these rights; the message says why."""


@dataclass
class ProbeContext:
    """What a probe may read, injected so tests can point it at captured trees."""

    salt: str = ""  # company-wide salt for hashing outside identifiers (agent config)
    window_seconds: float = 300.0  # the reporting window the report covers
    anchors: list[Anchor] = field(default_factory=list)  # latency-probe targets from the collector
    options: dict[str, Any] = field(default_factory=dict)  # probe-specific settings from config
    platform: str = sys.platform  # "linux", "darwin", "win32"
    proc_root: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    dev_root: Path = Path("/dev")
    etc_root: Path = Path("/etc")
    run: RunCommand = run_command
    clock: Callable[[], float] = time.time
    # Local config [agent] input_helper_socket/_group: per-user input helpers send here (input probe).
    input_helper_socket: Path | None = None
    input_helper_group: str | None = None
    # Kernel reads the probes share (one socket watcher thread; one /proc pass and one TCP dump per
    # collection): made for proc_root with the context.
    kernel: KernelReads = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.kernel = KernelReads(self.proc_root)


class ProbeOptions(BaseModel):
    """A probe's ``probe_options.<name>`` table (from the collector's config), typed: subclasses
    declare each option with its type, bounds and default."""

    model_config = ConfigDict(frozen=True, extra="ignore")


Options = TypeVar("Options", bound=ProbeOptions)

Section = TypeVar("Section")
"""What a probe's ``collect`` returns: the contract type of its report section."""


class Probe(ABC, Generic[Section]):
    """Base class of every probe. Subclasses set ``name`` and ``section`` and write ``collect``.

    ``Probe[HostFacts]`` collects a :class:`~farmwatch.contract.HostFacts`; the runner still checks
    the value against the report's field, since a probe written against a newer contract may differ.
    """

    name: ClassVar[str]  # registry key, used in errors[] entries
    section: ClassVar[str]  # the report field this probe fills

    def __init__(self, context: ProbeContext) -> None:
        self.context = context
        self.problems: list[str] = []

    def problem(self, message: str) -> None:
        """Record something this probe could not see; it becomes an ``errors[]`` entry."""
        self.problems.append(message)

    def read_options(self, model: type[Options], refuse: bool = False) -> Options:
        """This probe's options as ``model``. An unknown key or a bad value is named in ``errors``
        and the default used instead; with ``refuse``, a bad value raises :class:`ProbeUnavailable`."""
        where = f"probe_options.{self.name}"
        raw = self.context.options.get(self.name, {})
        if not isinstance(raw, dict):
            self.problem(f"{where}: must be a table, got {raw!r}; defaults used")
            return model()
        for key in sorted(set(raw) - set(model.model_fields)):
            self.problem(f"{where}.{key}: not an option of this probe (known: {', '.join(model.model_fields)}); ignored")
        given = {key: value for key, value in raw.items() if key in model.model_fields}
        try:
            return model.model_validate(given)
        except ValidationError as invalid:
            bad = {str(error["loc"][0]): error["msg"] for error in invalid.errors()}
        for key, why in bad.items():
            message = f"{where}.{key} is {given[key]!r}: {why}"
            if refuse:
                raise ProbeUnavailable(message)
            self.problem(f"{message}; used {model.model_fields[key].default!r}")
        return model.model_validate({key: value for key, value in given.items() if key not in bad})

    def start(self) -> None:
        """Begin background observation (listeners); most probes need nothing here."""

    def stop(self) -> None:
        """End background observation."""

    @abstractmethod
    def collect(self) -> Section:
        """Return this probe's section of the report (a contract model or a list of them)."""
