"""`sollol bench`'s results: the rows it measured, how a sharded model compares with its best single node, and
the file they are kept in (one per cluster, newest measurement per backend and model), which `status` shows
and the router starts from (`measured_speeds`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sollol_cli.files import update_locked
from sollol_cli.names import normalize_model_name, same_model
from sollol_cli.router import SpeedEstimate


@dataclass(frozen=True)
class Level:
    """One round: `requests` requests, `at_once` of them at a time."""

    at_once: int
    requests: int
    ttft_s: float | None  # median time to first token
    tokens_per_s: float | None  # median decode speed of one request, as the backend reports it
    total_tokens_per_s: float | None  # tokens of all requests over the round's wall time
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchRow:
    model: str
    backend: str
    mode: str  # distribute | shard
    single: Level
    concurrent: Level
    measured_at: float = field(default=0.0)


@dataclass(frozen=True)
class Comparison:
    """A sharded model against the best node that serves it whole, by single-request tokens/s.
    `single_backend` is None when no node was measured, and `note` says why."""

    model: str
    sharded_tokens_per_s: float | None
    single_backend: str | None = None
    single_tokens_per_s: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Sharded speed over the single node's: below 1 is what sharding costs (it buys memory, not speed)."""
        if not self.sharded_tokens_per_s or not self.single_tokens_per_s:
            return None
        return self.sharded_tokens_per_s / self.single_tokens_per_s


def compare(rows: Sequence[BenchRow]) -> list[Comparison]:
    """One comparison per sharded model measured, in the rows' order."""
    found = []
    for shard in (r for r in rows if r.mode == "shard"):
        whole = [
            r
            for r in rows
            if r.mode == "distribute" and same_model(r.model, shard.model) and r.single.tokens_per_s is not None
        ]
        sharded = shard.single.tokens_per_s
        if not whole:
            found.append(Comparison(shard.model, sharded, note=NO_SINGLE_NODE))
            continue
        best = max(whole, key=lambda r: (r.single.tokens_per_s or 0.0, r.backend))
        found.append(Comparison(shard.model, sharded, best.backend, best.single.tokens_per_s))
    return found


NO_SINGLE_NODE = "no single node was measured: none serves it whole, or none can hold it (mode: auto)"


def results_path(state_dir: Path, cluster: str) -> Path:
    return state_dir / "bench" / f"{cluster}.json"


def load_results(state_dir: Path, cluster: str) -> list[BenchRow]:
    try:
        data = json.loads(results_path(state_dir, cluster).read_text())
        return [_row(item) for item in data["rows"]]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return []  # none yet, or unreadable: measurements are a cache, a new run rewrites them


async def save_results(state_dir: Path, cluster: str, rows: Sequence[BenchRow]) -> Path:
    """Keep the newest measurement per (model, backend): a run of one model leaves the others' results, and
    two `sollol bench` runs at once both keep theirs (the merge is done under the file's lock)."""

    def merged() -> str:
        kept = {(r.model, r.backend): r for r in load_results(state_dir, cluster)}
        kept.update({(r.model, r.backend): r for r in rows})
        ordered = [kept[key] for key in sorted(kept)]
        return json.dumps({"rows": [asdict(r) for r in ordered]}, indent=2) + "\n"

    path = results_path(state_dir, cluster)
    await update_locked(path, merged, holder=f"sollol bench (pid {os.getpid()})")
    return path


def _row(item: dict[str, Any]) -> BenchRow:
    def level(data: dict[str, Any]) -> Level:
        return Level(**{**data, "errors": tuple(data.get("errors", ()))})

    return BenchRow(
        item["model"], item["backend"], item["mode"], level(item["single"]), level(item["concurrent"]),
        float(item.get("measured_at", 0.0)),
    )  # fmt: skip


def rows_data(rows: Sequence[BenchRow]) -> list[dict[str, Any]]:
    """The rows of `sollol bench --json`."""
    return [asdict(r) for r in rows]


def measured_speeds(rows: Sequence[BenchRow]) -> dict[tuple[str, str], SpeedEstimate]:
    """What the router starts from (`Monitor.measured`): one request's ttft and tokens/s per (normalised
    model name, backend), as bench measured them alone. Coordinators are left out: their name is per model
    and the router does not choose among them."""
    return {
        (normalize_model_name(r.model), r.backend): SpeedEstimate(r.single.ttft_s, r.single.tokens_per_s)
        for r in rows
        if r.mode == "distribute"
    }


def comparisons_data(comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """The `sharding` part of `sollol bench --json`: each sharded model against its best single node."""
    return [asdict(c) | {"ratio": c.ratio} for c in comparisons]
