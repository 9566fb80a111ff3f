"""The `sollol status` table: one row per backend, problems listed under it (they are too long for a cell)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sollol_cli.ui.console import err, out

STATE_STYLE = {"yes": "green", "busy": "yellow", "loading": "yellow", "no": "red"}
STATE_WORD = {"yes": "up", "busy": "busy", "loading": "loading", "no": "down"}


def _memory(row: dict[str, Any]) -> str:
    free, total = row["free_bytes"], row["total_bytes"]
    if free is None:
        return "-"
    return f"{free / 1024**3:.1f}/{total / 1024**3:.1f} GiB" if total else f"{free / 1024**3:.1f} GiB"


def _models(row: dict[str, Any]) -> str:
    loaded = set(row["loaded"])
    return ", ".join(f"{m}*" if m in loaded else m for m in row["models"]) or "-"


def render(data: dict[str, Any]) -> Group:
    title = f"cluster '{escape(data['cluster'])}': {data['reachable']}/{data['total']} backends reachable"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, title_style="bold")
    for column, kwargs in (
        ("backend", {"no_wrap": True}),
        ("kind", {}),
        ("address", {"no_wrap": True}),
        ("state", {}),
        ("version", {}),
        ("models (*loaded)", {"overflow": "fold"}),
        ("free", {"no_wrap": True}),
        ("busy", {}),
    ):
        table.add_column(column, **kwargs)
    problems = []
    for row in data["backends"]:
        state = row["reachable"]
        busy = "-" if row["in_flight"] is None else f"{row['in_flight']}/{row['slots'] or '?'}"
        shown = f"[{STATE_STYLE.get(state, '')}]{STATE_WORD.get(state, state)}[/]"
        table.add_row(
            escape(row["name"]), row["kind"], row["address"], shown,
            escape(row["version"] or "-"), escape(_models(row)), _memory(row), busy,
        )  # fmt: skip
        if row["error"]:
            error = row["error"]  # a client's error names its backend already ("n1 (host:port): ...")
            said = error if error.startswith(f"{row['name']} (") else f"{row['name']}: {error}"
            problems.append(Text(said, style="red" if state == "no" else "yellow"))
    models = []
    for model in data.get("models", []):
        models.append(Text(f"{model['name']}: {model['reason']}", style="dim" if model["mode"] == "distribute" else ""))
        running = model.get("coordinator")
        if running:
            where = f"node {running['node']}" if running.get("node") else "this machine"
            models.append(Text(f"  coordinator on {where}, {running['host']}:{running['port']} (pid {running['pid']})"))
        models.extend(Text(f"  {line}") for line in model["placement"])
    if models:
        models.insert(0, Text("models:", style="bold"))
    return Group(table, *problems, *models)


def print_status(data: dict[str, Any]) -> None:
    # The table is the command's output: stdout, so `sollol status | less` works.
    out().print(render(data))


@contextmanager
def live_status(data: dict[str, Any]) -> Iterator[Callable[[dict[str, Any]], None]]:
    with Live(render(data), console=err(), refresh_per_second=4, screen=False) as live:
        yield lambda new: live.update(render(new))
