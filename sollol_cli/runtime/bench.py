"""`sollol bench`: what each backend does with each model, measured the way requests use it.

Per model and backend: time to first token and tokens/s, one request at a time (`requests` of them, the
median reported) and `concurrency` requests at once (the aggregate tokens/s over the wall time). A sharded
model is measured through its coordinator (after its rpc backends that no coordinator holds are measured
again: sharding/calibration.py, their speeds decide how its next coordinator splits the layers) and, when the
manifest shards it although a node has it whole (`mode: shard`), on those nodes too, so
`bench_results.compare` can say what sharding costs against the best single node. Under `mode: auto` a sharded
model is one no node can hold (the hybrid decision said so), and loading it on one anyway is not a measurement
anyone asked for. Backends are measured one after another, never two at once, so the cluster never carries
more than `concurrency` benchmark requests: no more load than the user asked for.

What is kept of a run, and how it is compared and read back: bench_results.py.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sollol_cli import events
from sollol_cli.backends.base import Backend
from sollol_cli.errors import SollolError, UsageError
from sollol_cli.manifest.models import ModelMode
from sollol_cli.names import normalize_model_name, same_model
from sollol_cli.runtime.bench_results import BenchRow, Level
from sollol_cli.runtime.dispatch import Trace, model_unknown, timed
from sollol_cli.runtime.session import ClusterRuntime

PROMPT = "Write a short paragraph about the sea."


@dataclass(frozen=True)
class BenchOptions:
    concurrency: int = 4  # requests at once in the concurrent round
    requests: int = 3  # one at a time, before it
    tokens: int = 64  # num_predict of every request
    prompt: str = PROMPT


@dataclass
class _Sample:
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    tokens: int = 0
    error: str | None = None


async def bench(
    runtime: ClusterRuntime,
    models: Sequence[str],
    options: BenchOptions,
    *,
    reporter: events.Reporter = events.ignore,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> list[BenchRow]:
    """Measure every backend that serves each of `models` (default: the manifest's models, else every model
    a reachable backend has)."""
    if options.concurrency < 1 or options.requests < 1 or options.tokens < 1:
        raise UsageError("--concurrency, --requests and --tokens must be at least 1")
    wanted = list(models) or [m.name for m in runtime.cluster.models] or _present_models(runtime)
    if not wanted:
        raise UsageError("no model to measure: no backend has one", hint="name one: `sollol bench MODEL`")
    rows = []
    for model in wanted:
        for name, mode, backend in await _targets(runtime, model, reporter):
            subject = f"{model} on {name}"
            reporter(
                events.StepStarted(subject, "measuring", f"{options.requests} alone, {options.concurrency} at once")
            )
            single = await _round(backend, model, options, 1, options.requests, clock, reporter, subject)
            concurrent = await _round(
                backend, model, options, options.concurrency, options.concurrency, clock, reporter, subject
            )
            reporter(events.StepDone(subject, "measuring", _summary(single)))
            rows.append(BenchRow(model, name, mode, single, concurrent, wall()))
    return rows


def _present_models(runtime: ClusterRuntime) -> list[str]:
    seen: dict[str, str] = {}
    for view in runtime.monitor.views.values():
        if view.client is not None and view.probe.healthy:
            for model in sorted(view.models):
                seen.setdefault(normalize_model_name(model), model)
    return list(seen.values())


async def _targets(runtime: ClusterRuntime, model: str, reporter: events.Reporter) -> list[tuple[str, str, Backend]]:
    """(name, mode, backend) to measure for `model`: its coordinator when sharded, else each healthy backend
    that has it."""
    found: list[tuple[str, str, Backend]] = []
    shards = runtime.shards
    if shards is not None and shards.handles(model)[0]:
        await shards.measure_speeds(model)  # the rpc backends' speeds decide its next split
        coordinator = await shards.backend_for(model, reporter)
        found.append((coordinator.ref.name, "shard", coordinator))
        manifest_model = shards.model(model)
        if manifest_model is None or manifest_model.mode is not ModelMode.shard:
            return found  # auto: no node can hold it whole (see the module's docstring)
    for view in runtime.monitor.views.values():
        if view.client is not None and view.probe.healthy and any(same_model(m, model) for m in view.models):
            found.append((view.name, "distribute", view.client))
    if not found:
        raise model_unknown(runtime.monitor, model)  # the same answer `sollol run` gives
    return found


async def _round(
    backend: Backend,
    model: str,
    options: BenchOptions,
    at_once: int,
    requests: int,
    clock: Callable[[], float],
    reporter: events.Reporter,
    subject: str,
) -> Level:
    samples: list[_Sample] = []
    started = clock()
    remaining = requests
    while remaining:
        batch = min(at_once, remaining)
        samples += await asyncio.gather(*(_one(backend, model, options) for _ in range(batch)))
        remaining -= batch
        reporter(events.StepProgress(subject, "measuring", len(samples), requests))
    elapsed = clock() - started
    ok = [s for s in samples if s.error is None]
    total = sum(s.tokens for s in ok)
    return Level(
        at_once=at_once,
        requests=requests,
        ttft_s=_median([s.ttft_s for s in ok]),
        tokens_per_s=_median([s.tokens_per_s for s in ok]),
        total_tokens_per_s=total / elapsed if ok and total and elapsed > 0 else None,
        errors=tuple(dict.fromkeys(s.error for s in samples if s.error is not None)),
    )


async def _one(backend: Backend, model: str, options: BenchOptions) -> _Sample:
    body = {"model": model, "prompt": options.prompt, "stream": True, "options": {"num_predict": options.tokens}}
    trace = Trace(model)
    sample = _Sample()
    try:
        chunks: AsyncIterator[dict[str, Any]] = timed(backend.generate(body), trace, label=backend.ref.label)
        async for chunk in chunks:
            if chunk.get("done"):
                count = chunk.get("eval_count")
                sample.tokens = count if isinstance(count, int) else 0
    except SollolError as exc:
        sample.error = exc.message
    sample.ttft_s, sample.tokens_per_s = trace.ttft_s, trace.tokens_per_s
    return sample


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _summary(level: Level) -> str:
    if level.tokens_per_s is None:
        return "no answer" if level.errors else "no token counts"
    return f"{level.tokens_per_s:.1f} tokens/s"
