"""The agent's expected failures. The CLI prints their message as one line, never a traceback."""

from __future__ import annotations

from farmwatch.errors import FarmwatchError


class AgentError(FarmwatchError):
    """An expected failure whose message says what went wrong and where."""

    exit_code = 1


class UsageError(AgentError):
    """Bad flags or a missing/unreadable input file (EX_USAGE)."""

    exit_code = 64


class CollectorUnavailable(AgentError):
    """The collector could not be reached, answered 5xx or asked us to slow down (429): keep the
    spool, try later (EX_TEMPFAIL)."""

    exit_code = 75

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of a 5xx or 429 answer; None when nothing answered
        self.retry_after = retry_after  # seconds the collector asked us to wait (Retry-After), if it did


class ReportsFailing(CollectorUnavailable):
    """The collector is up but answered 5xx for some spooled reports: they stay, counted toward quarantine."""


class ReportNotKept(AgentError):
    """A report could be neither spooled (e.g. a full disk) nor sent; counted for the next report (EX_IOERR)."""

    exit_code = 74


class CollectorRefused(AgentError):
    """The collector refused us for good (e.g. wrong enrol secret); retrying will not help."""

    exit_code = 77  # EX_NOPERM
