"""The `sollol status` table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from sollol_cli.ui.console import err, out

REACH_STYLE = {"yes": "green", "busy": "yellow", "loading": "yellow", "no": "red"}


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024**3:.1f} GiB"


def _models(row: dict[str, Any]) -> str:
    loaded = set(row["loaded"])
    names = [f"{m}*" if m in loaded else m for m in row["models"]]
    return ", ".join(names) or "-"


def render(data: dict[str, Any]) -> Table:
    table = Table(
        title=f"cluster '{escape(data['cluster'])}': {data['reachable']}/{data['total']} backends reachable",
        title_justify="left", box=None, pad_edge=False,
    )  # fmt: skip
    for column in (
        "backend",
        "kind",
        "address",
        "reachable",
        "version",
        "models (*loaded)",
        "free",
        "busy",
        "last error",
    ):
        table.add_column(column, overflow="fold")
    for row in data["backends"]:
        style = REACH_STYLE.get(row["reachable"], "")
        busy = "-" if row["in_flight"] is None else f"{row['in_flight']}/{row['slots'] or '?'}"
        free = (
            _gib(row["free_bytes"])
            if row["total_bytes"] is None
            else f"{_gib(row['free_bytes'])} of {_gib(row['total_bytes'])}"
        )
        table.add_row(
            escape(row["name"]), row["kind"], row["address"], f"[{style}]{row['reachable']}[/]",
            escape(row["version"] or "-"), escape(_models(row)), free, busy, escape(row["error"] or ""),
        )  # fmt: skip
    return table


def print_status(data: dict[str, Any]) -> None:
    # The table is the command's output: stdout, so `sollol status | less` works.
    out().print(render(data))


@contextmanager
def live_status(data: dict[str, Any]) -> Iterator[Callable[[dict[str, Any]], None]]:
    with Live(render(data), console=err(), refresh_per_second=4, screen=False) as live:
        yield lambda new: live.update(render(new))
