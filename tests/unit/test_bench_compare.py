"""`compare`: each sharded model against the fastest node that serves it whole, as a table of cases."""

from __future__ import annotations

import pytest

from sollol_cli.runtime.bench_results import NO_SINGLE_NODE, BenchRow, Comparison, Level, compare
from sollol_cli.ui.bench import comparison_line


def row(model: str, backend: str, mode: str, tokens_per_s: float | None) -> BenchRow:
    level = Level(at_once=1, requests=1, ttft_s=0.1, tokens_per_s=tokens_per_s, total_tokens_per_s=tokens_per_s)
    return BenchRow(model, backend, mode, level, level)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], []),
        # distribute only: nothing to compare
        ([row("m", "a", "distribute", 10.0)], []),
        # the fastest whole copy is the one compared
        (
            [row("big", "coordinator:big", "shard", 12.0), row("big", "a", "distribute", 20.0),
             row("big", "b", "distribute", 30.0)],
            [Comparison("big", 12.0, "b", 30.0)],
        ),
        # names compare by Ollama's rules; another model's rows do not count
        (
            [row("big:latest", "coordinator:big", "shard", 12.0), row("big", "a", "distribute", 24.0),
             row("small", "c", "distribute", 99.0)],
            [Comparison("big:latest", 12.0, "a", 24.0)],
        ),
        # a node that produced no token counts is no comparison
        (
            [row("big", "coordinator:big", "shard", 12.0), row("big", "a", "distribute", None)],
            [Comparison("big", 12.0, note=NO_SINGLE_NODE)],
        ),
        ([row("big", "coordinator:big", "shard", None)], [Comparison("big", None, note=NO_SINGLE_NODE)]),
    ],
)  # fmt: skip
def test_compare(rows: list[BenchRow], expected: list[Comparison]) -> None:
    assert compare(rows) == expected


@pytest.mark.parametrize(
    ("comparison", "ratio", "line"),
    [
        (Comparison("big", 12.0, "b", 30.0), 0.4, "big sharded: 12.0 tokens/s, 0.40x b alone (30.0 tokens/s)"),
        (Comparison("big", 12.0, note=NO_SINGLE_NODE), None, f"big sharded: 12.0 tokens/s; {NO_SINGLE_NODE}"),
        (Comparison("big", None, "b", 30.0), None, "big sharded: - tokens/s, - b alone (30.0 tokens/s)"),
    ],
)
def test_ratio_and_line(comparison: Comparison, ratio: float | None, line: str) -> None:
    assert comparison.ratio == (pytest.approx(ratio) if ratio is not None else None)
    assert comparison_line(comparison) == line
