"""The root of farmwatch's expected failures.

Every failure farmwatch raises on purpose (a bad flag, an unreadable file, a refused request, a
probe that cannot run here) derives from :class:`FarmwatchError`, so one ``except FarmwatchError``
tells "a failure whose message is written for a person" from a bug. Each area keeps its classes
beside the code that raises them: :mod:`farmwatch.agent.errors` (the agent CLI's exit codes),
``ProbeUnavailable`` in :mod:`farmwatch.agent.probes.base`, ``ConfigError``/``StoreError``/
``Rejected`` in the collector, ``RecordError`` in :mod:`farmwatch.detectors.frame`. A class that
callers already catch as a builtin (``ValueError``, ``OSError``) keeps that base as well.
``tests/test_errors.py`` checks that no exception class in the package is left outside.
"""

from __future__ import annotations


class FarmwatchError(Exception):
    """An expected failure; its message says what went wrong and where."""
