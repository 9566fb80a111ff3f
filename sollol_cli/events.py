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


Reporter = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default reporter: drop events."""
