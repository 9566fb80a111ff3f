"""The `sollol discover` table and summary."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sollol_cli.discovery.fingerprint import Found
from sollol_cli.discovery.run import ScanResult
from sollol_cli.discovery.targets import endpoint
from sollol_cli.discovery.write import WriteResult
from sollol_cli.ui.console import err, out

GIB = 1024**3


def _what(item: Found) -> str:
    if item.kind == "rpc" and item.total_bytes is not None and item.free_bytes is not None:
        devices = f" on {item.devices} devices" if item.devices and item.devices > 1 else ""
        return f"{item.free_bytes / GIB:.1f}/{item.total_bytes / GIB:.1f} GiB free{devices}"
    if item.models:
        slots = f" ({item.slots} slots)" if item.slots else ""
        return ", ".join(item.models) + slots
    if item.kind == "ollama":
        return "no models"
    return item.detail or "-"


def print_found(result: ScanResult) -> None:
    """The table on stdout, the summary on stderr."""
    table = Table(box=None, pad_edge=False)
    for column in ("address", "port", "kind", "state", "version", "models / memory", "latency"):
        table.add_column(column, justify="right" if column in ("port", "latency") else "left")
    for item in result.found:
        latency = f"{item.latency_ms:.0f} ms" if item.latency_ms is not None else "-"
        table.add_row(
            item.address,
            str(item.port),
            item.kind,
            item.state,
            escape(item.version or "-"),
            escape(_what(item)),
            latency,
        )
    if result.found:
        out().print(table)
    backends = sum(1 for item in result.found if item.kind != "unknown")
    err().print(
        f"{result.addresses} addresses x {len(result.ports)} ports in {result.seconds:.2f} s: "
        f"{backends} backends, {len(result.found) - backends} other open ports",
        highlight=False,
    )
    if result.silent:
        ports = ", ".join(endpoint(address, port) for address, port in result.silent)
        err().print(
            f"no answer from {escape(ports)} although the host is up: a firewall, or an rpc-server busy "
            "with a coordinator (it queues only two connections until the coordinator leaves)",
            highlight=False,
        )


def print_written(written: WriteResult, manifest: Path) -> None:
    where = escape(str(manifest))
    if not written.added:
        err().print(f"nothing new for {where}", highlight=False)
        return
    err().print(f"added {len(written.added)} backends to {where}", highlight=False)
    if not written.kept_layout:
        err().print(
            f"[yellow]warning:[/] {where} was rewritten with normalised indentation (comments kept): "
            "its `backends` list has a layout sollol cannot extend in place",
            highlight=False,
        )
