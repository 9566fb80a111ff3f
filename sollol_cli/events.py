"""Typed progress events. Core code emits them through a `Reporter`; `ui/` renders them.

Core modules never print: they call `reporter(event)`. The default reporter drops everything, so library
use and tests need no UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """Base class of all progress events."""


@dataclass(frozen=True)
class StepStarted(Event):
    """A named step of one subject (node, build, scan) started."""

    subject: str
    step: str
    detail: str = ""


@dataclass(frozen=True)
class StepProgress(Event):
    """Progress of a step measured in units (bytes, addresses, build targets)."""

    subject: str
    step: str
    completed: float
    total: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class StepDone(Event):
    subject: str
    step: str
    detail: str = ""


@dataclass(frozen=True)
class StepFailed(Event):
    subject: str
    step: str
    reason: str


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - a domain name, shadowing the builtin is harmless here
    subject: str
    message: str


# --- what happened to a sharded model's coordinator while serving one request (`sollol run -v`) ---


@dataclass(frozen=True)
class CoordinatorStarted(Event):
    model: str
    node: str | None  # None: this machine
    pid: int
    ready_after_s: float
    placement: tuple[str, ...]  # one line per rpc backend (and the coordinator), as `sollol status` shows
    speed: str = ""  # how the layers were split and the tokens/s expected (sharding.lifecycle.speed_line)


@dataclass(frozen=True)
class CoordinatorReused(Event):
    model: str
    node: str | None
    pid: int
    port: int
    placement: tuple[str, ...]
    speed: str = ""


@dataclass(frozen=True)
class CoordinatorMoved(Event):
    """The manifest names another place for the coordinator: the running one was stopped."""

    model: str
    was: str  # "this machine" or "node NAME"
    now: str


@dataclass(frozen=True)
class CoordinatorOutdated(Event):
    """The running coordinator uses rpc endpoints the manifest no longer has (`gone`): it was stopped."""

    model: str
    gone: tuple[str, ...]


@dataclass(frozen=True)
class CoordinatorExited(Event):
    """The recorded coordinator was no longer running; `log` is the end of its log."""

    model: str
    log: str


@dataclass(frozen=True)
class CoordinatorAbandoned(Event):
    """A coordinator that never became ready (its loader died) or had lost its record was stopped."""

    model: str
    pid: int


@dataclass(frozen=True)
class CoordinatorFailed(Event):
    """The coordinator failed a request; it is stopped and the model planned again."""

    model: str
    log: str


@dataclass(frozen=True)
class CoordinatorEvicted(Event):
    """`model`'s coordinator was stopped to free the rpc-servers for `for_model`'s."""

    model: str
    for_model: str


Reporter = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default reporter: drop events."""
