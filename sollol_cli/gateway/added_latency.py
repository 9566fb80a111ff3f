"""What `sollol serve` adds to a request, measured by `sollol bench` on the user's own cluster.

The gateway is started in this process on a loopback port, and the same small request (one token, no
streaming) is sent alternately straight to a backend and through the gateway, from a client session of its
own, as an application would. Alternating keeps drift in the backend's speed out of the difference. The
gateway's request is compared with the direct time of the backend that served it (`X-Sollol-Backend`), so
routing to another backend never shows up as gateway time. What is left is the gateway's whole cost: the
extra HTTP hop on loopback, parsing and validation, routing, and writing the answer.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web

from sollol_cli import events
from sollol_cli.gateway.app import create_app
from sollol_cli.names import same_model
from sollol_cli.runtime.monitor import BackendView
from sollol_cli.runtime.session import ClusterRuntime

# requests each way per model: one-token answers, so cheap, and enough for a median that holds still
GATEWAY_PAIRS = 20


@dataclass(frozen=True)
class AddedLatency:
    """Medians over `requests` pairs; `added_ms` is None when no request through the gateway succeeded."""

    model: str
    requests: int
    direct_ms: float | None
    gateway_ms: float | None
    added_ms: float | None
    errors: tuple[str, ...] = ()


def request_for(view: BackendView, model: str) -> tuple[str, dict[str, Any]]:
    """(path, body) of the smallest real request in the backend's own API, which the gateway also serves."""
    if view.spec.ref.kind == "ollama":
        return "/api/generate", {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    return "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 1, "stream": False}


async def measure_added_latency(
    runtime: ClusterRuntime,
    models: Sequence[str],
    requests: int,
    *,
    reporter: events.Reporter = events.ignore,
    clock: Callable[[], float] = time.perf_counter,
) -> list[AddedLatency]:
    """One result per model some healthy backend serves whole (sharded models go through the gateway the same
    way, but their coordinator is no backend a client could call directly)."""
    app = create_app(runtime, health_loop=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        gateway_url = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as session:
            results = []
            for model in models:
                views = _serving(runtime, model)
                if not views:
                    continue
                subject = f"{model} through the gateway"
                reporter(events.StepStarted(subject, "measuring", f"{requests} requests each way"))
                result = await _pairs(session, gateway_url, views, model, requests, clock, reporter, subject)
                reporter(events.StepDone(subject, "measuring", _summary(result)))
                results.append(result)
            return results
    finally:
        await runner.cleanup()


def _serving(runtime: ClusterRuntime, model: str) -> list[BackendView]:
    shards = runtime.shards
    if shards is not None and shards.handles(model)[0]:
        return []
    return [
        v
        for v in runtime.monitor.views.values()
        if v.client is not None and v.probe.healthy and any(same_model(m, model) for m in v.models)
    ]


async def _pairs(
    session: aiohttp.ClientSession,
    gateway_url: str,
    views: Sequence[BackendView],
    model: str,
    requests: int,
    clock: Callable[[], float],
    reporter: events.Reporter,
    subject: str,
) -> AddedLatency:
    direct: dict[str, list[float]] = {v.name: [] for v in views}
    through: list[tuple[str, float]] = []  # (backend that served it, seconds)
    errors: list[str] = []
    for i in range(requests):
        for view in views:
            path, body = request_for(view, model)
            took, _, error = await _timed_post(session, view.spec.ref.base_url + path, body, clock)
            if error is None:
                direct[view.name].append(took)
            else:
                errors.append(f"{view.name}: {error}")
        path, body = request_for(views[i % len(views)], model)
        took, served_by, error = await _timed_post(session, gateway_url + path, body, clock)
        if error is None and served_by in direct:
            through.append((served_by, took))
        elif error is not None:
            errors.append(f"gateway: {error}")
        reporter(events.StepProgress(subject, "measuring", i + 1, requests))
    return _result(model, requests, direct, through, errors)


def _result(
    model: str,
    requests: int,
    direct: dict[str, list[float]],
    through: list[tuple[str, float]],
    errors: list[str],
) -> AddedLatency:
    """Pure: the medians from what was timed, in milliseconds."""
    base = {name: statistics.median(times) for name, times in direct.items() if times}
    added = [took - base[name] for name, took in through if name in base]
    every_direct = [t for times in direct.values() for t in times]
    return AddedLatency(
        model,
        requests,
        _ms(statistics.median(every_direct)) if every_direct else None,
        _ms(statistics.median([took for _, took in through])) if through else None,
        _ms(statistics.median(added)) if added else None,
        tuple(dict.fromkeys(errors)),
    )


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def _timed_post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], clock: Callable[[], float]
) -> tuple[float, str | None, str | None]:
    """(seconds to the whole answer, the backend the gateway named, error or None)."""
    started = clock()
    try:
        async with session.post(url, json=body) as response:
            await response.read()
            took = clock() - started
            if response.status != 200:
                return took, None, f"HTTP {response.status}"
            return took, response.headers.get("X-Sollol-Backend"), None
    except (aiohttp.ClientError, OSError) as exc:
        return clock() - started, None, str(exc) or type(exc).__name__


def _summary(result: AddedLatency) -> str:
    if result.added_ms is None:
        return "no answer through the gateway"
    return f"adds {result.added_ms:.2f} ms"


def added_latency_data(results: Sequence[AddedLatency]) -> list[dict[str, Any]]:
    """The `gateway` part of `sollol bench --json`."""
    return [asdict(r) for r in results]
