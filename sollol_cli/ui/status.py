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


def _gib(free: int | None, total: int | None) -> str | None:
    """`free/total GiB`, or whichever of the two is known; None for neither."""
    if free is None:
        return f"{total / 1024**3:.1f} GiB" if total else None
    return f"{free / 1024**3:.1f}/{total / 1024**3:.1f} GiB" if total else f"{free / 1024**3:.1f} GiB"


def _memory(row: dict[str, Any]) -> str:
    """The node's free memory, or an rpc-server's: one line per device when it serves several
    (`Vulkan0 1.9/2.0 GiB`, `#1 cpu 20.1/23.5 GiB` for a device the manifest does not name)."""
    devices = row.get("rpc_devices", [])
    if len(devices) > 1:
        lines = []
        for device in devices:
            name = device.get("name") or f"#{device['index']} {device['kind']}"
            lines.append(f"{name} {_gib(device['free_bytes'], device['total_bytes']) or '-'}")
        return "\n".join(lines)
    return "-" if row["free_bytes"] is None else _gib(row["free_bytes"], row["total_bytes"]) or "-"


def _accelerators(row: dict[str, Any]) -> str:
    """`cuda NVIDIA GeForce RTX 3090 23.3/24.0 GiB`, one line per device of the node."""
    shown = []
    for device in row.get("accelerators", []):
        text = f"{device['kind']} {device['name']}"
        if memory := _gib(device.get("memory_free"), device.get("memory_total")):
            text += f" {memory}"
        if device.get("device_type", "gpu") != "gpu":
            text += f" [{device['device_type']}]"
        shown.append(text)
    return "\n".join(shown) or "-"


def _build(row: dict[str, Any]) -> str:
    """`vulkan 0.3.36` (sollol's builds name their backend), `cuda (node_bin_dir)`, or `-`."""
    backend, build = row.get("llama_backend"), row.get("llama_build")
    if not backend:
        return "-"
    if not build:
        return str(backend)
    return str(build) if str(build).startswith(f"{backend} ") else f"{backend} ({build})"


def _models(row: dict[str, Any]) -> str:
    loaded = set(row["loaded"])
    return ", ".join(f"{m}*" if m in loaded else m for m in row["models"]) or "-"


def render(data: dict[str, Any]) -> Group:
    title = f"cluster '{escape(data['cluster'])}': {data['reachable']}/{data['total']} backends reachable"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, title_style="bold")
    # The llama.cpp build is shown once a node runs one other than the static CPU build (--json always says)
    builds = any(row.get("llama_backend") not in (None, "cpu") for row in data["backends"])
    for column, kwargs in (
        ("backend", {"no_wrap": True}),
        ("kind", {}),
        ("address", {"no_wrap": True}),
        ("state", {}),
        ("version", {}),
        *((("build", {"no_wrap": True}),) if builds else ()),
        ("models (*loaded)", {"overflow": "fold"}),
        ("free", {"no_wrap": True}),
        ("busy", {}),
    ):
        table.add_column(column, **kwargs)
    # The column is there when a node has a GPU: a CPU-type Vulkan device (Mesa's lavapipe, installed on many
    # machines without a GPU) alone does not make one; --json lists every device either way.
    devices = any(a["device_type"] != "cpu" for row in data["backends"] for a in row.get("accelerators", []))
    if devices:
        table.add_column("node devices", overflow="fold")
    problems = []
    for row in data["backends"]:
        state = row["reachable"]
        busy = "-" if row["in_flight"] is None else f"{row['in_flight']}/{row['slots'] or '?'}"
        shown = f"[{STATE_STYLE.get(state, '')}]{STATE_WORD.get(state, state)}[/]"
        cells = [
            escape(row["name"]), row["kind"], row["address"], shown, escape(row["version"] or "-"),
            *([escape(_build(row))] if builds else []), escape(_models(row)), _memory(row), busy,
        ]  # fmt: skip
        table.add_row(*cells, *([escape(_accelerators(row))] if devices else []))
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
    measured = [Text(_measured(row), style="dim") for row in data.get("measured", [])]
    if measured:
        measured.insert(0, Text("measured by sollol bench (one request at a time):", style="bold"))
    return Group(table, *problems, *models, *measured)


def _measured(row: dict[str, Any]) -> str:
    """e.g. `tiny on n1: 42.1 tokens/s, first token 120 ms (3 h ago)`."""
    rate = "-" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:.1f}"
    ttft = "-" if row["ttft_s"] is None else f"{row['ttft_s'] * 1000:.0f} ms"
    return f"  {row['model']} on {row['backend']}: {rate} tokens/s, first token {ttft} ({_ago(row['age_s'])})"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def print_status(data: dict[str, Any]) -> None:
    # The table is the command's output: stdout, so `sollol status | less` works.
    out().print(render(data))


@contextmanager
def live_status(data: dict[str, Any]) -> Iterator[Callable[[dict[str, Any]], None]]:
    with Live(render(data), console=err(), refresh_per_second=4, screen=False) as live:
        yield lambda new: live.update(render(new))
