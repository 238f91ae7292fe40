"""One error hierarchy: every exception class farmwatch defines derives from FarmwatchError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import farmwatch
from farmwatch.agent.errors import CollectorRefused
from farmwatch.agent.kernel.tcpinfo import RttUnavailable
from farmwatch.collector.config import ConfigError
from farmwatch.errors import FarmwatchError


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(farmwatch.__path__, "farmwatch."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_farmwatch_exception_derives_from_farmwatch_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 10  # the walk really found the areas' errors
    outside = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in classes if not issubclass(cls, FarmwatchError))
    assert outside == []


@pytest.mark.parametrize("error, builtin", [(ConfigError("x"), ValueError), (RttUnavailable("x"), OSError)])
def test_an_error_callers_catch_as_a_builtin_still_is_one(error: FarmwatchError, builtin: type[Exception]) -> None:
    assert isinstance(error, FarmwatchError) and isinstance(error, builtin)


def test_an_agent_error_keeps_its_exit_code() -> None:
    assert isinstance(CollectorRefused("x"), FarmwatchError) and CollectorRefused.exit_code == 77
