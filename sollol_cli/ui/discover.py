"""The `sollol discover` table."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from sollol_cli.discovery.fingerprint import Found
from sollol_cli.discovery.run import ScanResult
from sollol_cli.ui.console import err, out


def _what(item: Found) -> str:
    if item.kind == "rpc" and item.total_bytes:
        return f"{item.free_bytes / 1024**3:.1f}/{item.total_bytes / 1024**3:.1f} GiB free"  # type: ignore[operator]
    if item.models:
        return ", ".join(item.models)
    return item.detail or "-"


def print_found(result: ScanResult, written: list[Found], manifest: Path | None) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("address", "port", "kind", "state", "version", "models / memory", "latency"):
        table.add_column(column)
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
    backends = sum(1 for item in result.found if item.kind != "unknown")
    summary = (
        f"{result.addresses} addresses x {len(result.ports)} ports in {result.seconds:.2f} s: "
        f"{backends} backends, {len(result.found) - backends} other open ports"
    )
    if result.found:
        out().print(table)
    err().print(summary, highlight=False)
    if manifest is not None:
        if written:
            err().print(f"added {len(written)} backends to {escape(str(manifest))}", highlight=False)
        else:
            err().print(f"nothing new for {escape(str(manifest))}", highlight=False)
