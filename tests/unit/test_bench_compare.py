"""`compare`: each sharded model against the fastest node that serves it whole, as a table of cases; and saving
the results beside another process saving its own."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from sollol_cli.files import held_lock
from sollol_cli.runtime.bench_results import (
    NO_SINGLE_NODE,
    BenchRow,
    Comparison,
    Level,
    compare,
    load_results,
    results_path,
    save_results,
)
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


async def test_saving_waits_for_another_process_merging_and_keeps_its_rows(tmp_path: Path) -> None:
    """The merge is done under the file's lock, so a save that starts while another holds it merges after:
    the rows the other one wrote meanwhile are kept."""
    path = results_path(tmp_path, "c")
    async with held_lock(path.with_name(f"{path.name}.lock"), "another sollol bench"):
        saving = asyncio.create_task(save_results(tmp_path, "c", [row("m", "b", "distribute", 2.0)]))
        for _ in range(3):  # let it run: without the lock it has nothing else to wait for and would be done
            await asyncio.sleep(0)
        assert not saving.done()
        # what the other process writes while it holds the lock
        path.write_text(json.dumps({"rows": [asdict(row("m", "a", "distribute", 1.0))]}))
    await saving
    assert [(r.backend, r.single.tokens_per_s) for r in load_results(tmp_path, "c")] == [("a", 1.0), ("b", 2.0)]
