"""One contract every registered probe keeps, checked over the registry (like the detectors').

Each probe runs here against this box's real /proc and /sys, with commands refused (as on a
laptop missing the tool): whatever it can or cannot see, it must hand back a section the report
accepts or say why it cannot with ``ProbeUnavailable``, and never anything else.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from farmwatch.agent.probes.base import Probe, ProbeContext, ProbeUnavailable
from farmwatch.agent.probes.registry import PROBES, load_probe
from farmwatch.contract import Report

NAMES = sorted(PROBES)


def _refuse(argv: Sequence[str]) -> str:
    raise FileNotFoundError(2, "not installed on this test box", argv[0])


def _declared_section_type(cls: type[Probe[typing.Any]]) -> object:
    """The ``T`` of ``class XProbe(Probe[T])``."""
    [base] = [base for base in cls.__orig_bases__ if typing.get_origin(base) is Probe]  # type: ignore[attr-defined]
    [section_type] = typing.get_args(base)
    return section_type


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_names_a_probe_filling_a_report_section(name: str) -> None:
    cls = load_probe(name)
    assert issubclass(cls, Probe) and cls.name == name
    assert cls.section in Report.model_fields, f"{name} fills {cls.section}, which the report does not have"


def test_no_two_probes_fill_one_section() -> None:
    sections = [load_probe(name).section for name in NAMES]
    assert len(set(sections)) == len(sections)


@pytest.mark.parametrize("name", NAMES)
def test_collect_is_typed_as_the_report_field(name: str) -> None:
    """``Probe[T]`` names the section's type: the report's field is ``T | None``."""
    cls = load_probe(name)
    field = Report.model_fields[cls.section].annotation
    assert field == _declared_section_type(cls) | None
    assert typing.get_type_hints(cls.collect)["return"] == _declared_section_type(cls)


@pytest.mark.parametrize("name", NAMES)
def test_collect_returns_a_valid_section_or_says_why_not(name: str, tmp_path: Path) -> None:
    context = ProbeContext(salt="contract", run=_refuse, etc_root=tmp_path, options={})
    probe = load_probe(name)(context)
    probe.start()
    try:
        value = probe.collect()
    except ProbeUnavailable as reason:
        assert str(reason), f"{name} refused without saying why"
        return
    finally:
        probe.stop()
    field = Report.model_fields[probe.section].annotation
    TypeAdapter(field).validate_python(value, strict=True)
    assert all(isinstance(problem, str) and problem for problem in probe.problems)
