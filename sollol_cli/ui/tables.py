"""Tables for humans (stderr)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from sollol_cli.ui.console import err


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def print_manifest_summary(data: dict[str, Any]) -> None:
    console = err()
    console.print(f"[green]✓[/] {escape(data['manifest'])} is valid: cluster '{escape(data['cluster'])}'")
    if data["nodes"]:
        nodes = _table(f"nodes ({len(data['nodes'])})", "name", "address", "transport", "roles")
        for node in data["nodes"]:
            roles = ", ".join(f"{role}:{port}" for role, port in node["roles"].items()) or "-"
            nodes.add_row(escape(node["name"]), escape(node["address"]), node["transport"], escape(roles))
        console.print(nodes)
    if data["backends"]:
        backends = _table(f"backends ({len(data['backends'])})", "name", "kind", "address")
        for backend in data["backends"]:
            backends.add_row(escape(backend["name"]), backend["kind"], f"{backend['address']}:{backend['port']}")
        console.print(backends)
    if data["models"]:
        models = _table(f"models ({len(data['models'])})", "name", "mode", "source", "context")
        for model in data["models"]:
            models.add_row(escape(model["name"]), model["mode"], escape(model["source"]), str(model["context"]))
        console.print(models)
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
