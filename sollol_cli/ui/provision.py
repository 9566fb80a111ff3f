"""How `up` / `down` results look."""

from __future__ import annotations

import sys
from typing import Any

from rich.markup import escape
from rich.table import Table

from sollol_cli.provision.report import persistence_note, summary_line
from sollol_cli.ui.console import err

STATUS_STYLE = {"changed": "cyan", "unchanged": "green", "failed": "red", "unreachable": "red", "planned": "blue"}


def print_plan(data: dict[str, Any]) -> None:
    """`up --dry-run`: the plan per node, on stdout (it is the command's output), plain text."""
    out: list[str] = []
    for node in data["nodes"]:
        if node["status"] == "unreachable":
            out.append(f"{node['node']}: unreachable: {node['failures'][0]}")
            continue
        steps = node["plan"]
        changes = sum(1 for s in steps if s.split(" ", 1)[0] in ("upload", "stop", "start"))
        out.append(
            f"{node['node']}: " + (f"{changes} change{'s' if changes != 1 else ''}" if changes else "no changes")
        )
        out.extend(f"  {step}" for step in steps)
    sys.stdout.write("\n".join(out) + "\n")


def print_outcome(data: dict[str, Any]) -> None:
    console = err()
    table = Table(box=None, pad_edge=False, title_justify="left")
    for column in ("node", "status", "services", "detail"):
        table.add_column(column)
    for node in data["nodes"]:
        services = ", ".join(
            f"{s['kind']} {s['address']}" + (f" ({s['version']})" if s["version"] else "") for s in node["services"]
        )
        failures = node["failures"]
        if failures:
            detail = failures[0] + (f" (+{len(failures) - 1} more, see --json)" if len(failures) > 1 else "")
        else:
            detail = (
                f"{len(node['changes'])} change{'s' if len(node['changes']) != 1 else ''}" if node["changes"] else ""
            )
        style = STATUS_STYLE.get(node["status"], "")
        table.add_row(escape(node["node"]), f"[{style}]{node['status']}[/]", escape(services or "-"), escape(detail))
    console.print(table)
    console.print(summary_line(data), highlight=False)
    note = persistence_note(data)
    if note:
        console.print(escape(note), highlight=False)
