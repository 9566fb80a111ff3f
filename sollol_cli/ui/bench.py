"""The `sollol bench` table: one row per model and backend, alone and at once."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from sollol_cli.gateway.added_latency import AddedLatency
from sollol_cli.runtime.bench_results import BenchRow, Comparison, Level
from sollol_cli.ui.console import out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(rows: Sequence[BenchRow], concurrency: int) -> Table:
    table = Table(box=None, pad_edge=False, title_style="bold")
    for column in ("model", "backend", "mode"):
        table.add_column(column, no_wrap=True)
    for column in ("ttft", "tokens/s", f"ttft x{concurrency}", f"tokens/s x{concurrency}"):
        table.add_column(column, no_wrap=True, justify="right")
    table.add_column("errors", overflow="fold")
    for row in rows:
        alone, together = row.single, row.concurrent
        table.add_row(
            escape(row.model), escape(row.backend), row.mode,
            _ms(alone.ttft_s), _rate(alone.tokens_per_s),
            _ms(together.ttft_s), _rate(together.total_tokens_per_s),
            escape(_errors(alone, together)),
        )  # fmt: skip
    return table


def _errors(*levels: Level) -> str:
    said = [error for level in levels for error in level.errors]
    return "; ".join(dict.fromkeys(said)) or "-"


def comparison_line(c: Comparison) -> str:
    """One sharded model against its best single node, e.g.
    `big sharded: 12.0 tokens/s, 0.40x n1 alone (30.0 tokens/s)`."""
    head = f"{c.model} sharded: {_rate(c.sharded_tokens_per_s)} tokens/s"
    if c.single_backend is None:
        return f"{head}; {c.note}"
    ratio = "-" if c.ratio is None else f"{c.ratio:.2f}x"
    return f"{head}, {ratio} {c.single_backend} alone ({_rate(c.single_tokens_per_s)} tokens/s)"


def added_latency_line(result: AddedLatency) -> str:
    """e.g. `tiny through sollol serve: +0.92 ms (3.10 ms against 2.18 ms direct, median of 20)`."""
    head = f"{result.model} through sollol serve:"
    if result.added_ms is None:
        return f"{head} no answer ({'; '.join(result.errors) or 'nothing served it'})"
    return (
        f"{head} {result.added_ms:+.2f} ms ({result.gateway_ms:.2f} ms against {result.direct_ms:.2f} ms direct, "
        f"median of {result.requests})"
    )


def print_bench(
    rows: Sequence[BenchRow],
    concurrency: int,
    comparisons: Sequence[Comparison] = (),
    added: Sequence[AddedLatency] = (),
) -> None:
    console = out()
    console.print(render(rows, concurrency))
    for line in [*map(comparison_line, comparisons), *map(added_latency_line, added)]:
        console.print(escape(line), highlight=False)
