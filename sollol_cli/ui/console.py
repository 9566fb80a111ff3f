"""The two consoles: `err` for humans (progress, tables, errors), `out` for data (`--json`, tokens)."""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import Any

from rich.console import Console
from rich.markup import escape

from sollol_cli import events


@cache
def err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


PIPE_WIDTH = 160  # tables written to a pipe or file are not squeezed into 80 columns


@cache
def out() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def interactive() -> bool:
    """Live displays only when a person watches stderr; piped output stays quiet and plain."""
    return sys.stderr.isatty()


def print_json(data: Any) -> None:
    """Machine output: compact-but-readable JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    err().print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)


def info(message: str) -> None:
    err().print(message, markup=False, highlight=False)


def report_warnings(event: events.Event) -> None:
    """A reporter for commands that show no progress (`status`, `serve`): only the warnings reach the user,
    e.g. a coordinator record that had to be set aside."""
    if isinstance(event, events.Warning):
        warn(f"{escape(event.subject)}: {escape(event.message)}")
