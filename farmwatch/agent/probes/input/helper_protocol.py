"""What the per-user input helper sends the agent's service: timing aggregates, one JSON line each.

Why a helper: on macOS the LaunchDaemon (and on Linux a service without access to the desktop)
cannot see the signed-in user's input, so ``farmwatch-agent input-helper`` runs in the user's
session, reduces input to the aggregates below and sends them over a local socket every
:data:`FLUSH_SECONDS`. The service adds them to its window (:meth:`InputStats.merge`).

A message holds counts and two histograms of intervals, never a key, a character, a position, a
window title or the order of the intervals; nothing here can carry text. Every field is bounded,
so a message outside the bounds (or longer than :data:`MAX_MESSAGE_BYTES`) is refused whole.
``uid`` is the user the helper runs as: the service refuses a message whose ``uid`` is not the
one the kernel reports for the connection (a forged sender).

Wire format: UTF-8 JSON objects, one per line (``\\n``), on a stream Unix socket.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from farmwatch.contract import InputSource, Text

PROTOCOL_VERSION: Literal[1] = 1
FLUSH_SECONDS = 10.0  # how often a helper sends what it saw; a lost connection loses at most this much
MAX_MESSAGE_BYTES = 65536  # a message (one line) longer than this is refused and the connection closed

_MAX_COUNT = 10_000_000  # far beyond any person's input in one message (a 8000 Hz mouse for 20 min)
Count = Annotated[int, Field(ge=0, le=_MAX_COUNT)]
Milliseconds = Annotated[int, Field(ge=0, le=60_000)]
Steps = Annotated[int, Field(ge=1, le=60_000)]
PositiveCount = Annotated[int, Field(ge=1, le=_MAX_COUNT)]


class InputAggregate(BaseModel):
    """Input since the previous message, in a form windows can be summed from (see ``stats.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_events: Count = 0
    mouse_events: Count = 0
    injected_events: Count = 0
    key_bursts: Count = 0  # key presses less than InputStats.burst after the previous one
    mouse_moves: Count = 0
    mouse_jumps: Count = 0  # moves of more than InputStats.jump pixels at once
    active_seconds: Annotated[int, Field(ge=0, le=86_400)] = 0  # seconds with input not counted before
    key_interval_ms: Annotated[dict[Milliseconds, PositiveCount], Field(max_length=4096)] = {}
    move_interval_steps: Annotated[dict[Steps, PositiveCount], Field(max_length=4096)] = {}

    @model_validator(mode="after")
    def _consistent(self) -> InputAggregate:
        """Parts cannot exceed their whole: such a message was not made by InputStats."""
        checks = {
            "key_bursts > key_events": self.key_bursts > self.key_events,
            "mouse_moves > mouse_events": self.mouse_moves > self.mouse_events,
            "mouse_jumps > mouse_moves": self.mouse_jumps > self.mouse_moves,
            "injected_events > key_events + mouse_events": self.injected_events > self.key_events + self.mouse_events,
            "more key intervals than key events": sum(self.key_interval_ms.values()) > self.key_events,
            "more move intervals than mouse moves": sum(self.move_interval_steps.values()) > self.mouse_moves,
        }
        broken = [name for name, failed in checks.items() if failed]
        if broken:
            raise ValueError(f"inconsistent counts: {', '.join(broken)}")
        return self


class HelperMessage(BaseModel):
    """One line from a helper: who claims to send it, from which listener, and what it saw."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION
    uid: Annotated[int, Field(ge=0, le=2**32 - 1)]
    source: InputSource
    virtual_devices: Annotated[list[Annotated[Text, Field(max_length=200)]], Field(max_length=32)] = []
    aggregate: InputAggregate


def encode(message: HelperMessage) -> bytes:
    """The message as one line on the wire."""
    return message.model_dump_json().encode() + b"\n"
