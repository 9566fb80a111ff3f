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
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sollol_cli import events
from sollol_cli.backends.base import BackendRef
from sollol_cli.gateway.app import create_app
from sollol_cli.names import same_model
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


def request_for(backend: BackendRef, model: str) -> tuple[str, dict[str, Any]]:
    """(path, body) of the smallest real request in the backend's own API, which the gateway also serves."""
    if backend.kind == "ollama":
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
    """One result per model: against each healthy backend that serves it whole, or for a sharded model its
    coordinator (started if it is not running, as a request would)."""
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
                backends = await _serving(runtime, model, reporter)
                if not backends:
                    continue
                subject = f"{model} through the gateway"
                reporter(events.StepStarted(subject, "measuring", f"{requests} requests each way"))
                result = await _pairs(session, gateway_url, backends, model, requests, clock, reporter, subject)
                reporter(events.StepDone(subject, "measuring", _summary(result)))
                results.append(result)
            return results
    finally:
        await runner.cleanup()


async def _serving(runtime: ClusterRuntime, model: str, reporter: events.Reporter) -> list[BackendRef]:
    shards = runtime.shards
    if shards is not None and shards.handles(model)[0]:
        return [(await shards.backend_for(model, reporter)).ref]
    return [
        v.spec.ref
        for v in runtime.monitor.views.values()
        if v.client is not None and v.probe.healthy and any(same_model(m, model) for m in v.models)
    ]


@dataclass
class _Rounds:
    """The requests of one model's measurement and what they took."""

    session: aiohttp.ClientSession
    gateway_url: str
    backends: Sequence[BackendRef]
    model: str
    clock: Callable[[], float]
    direct: dict[str, list[float]] = field(default_factory=dict)
    through: list[tuple[str, float]] = field(default_factory=list)  # (backend that served it, seconds)
    errors: list[str] = field(default_factory=list)

    async def straight(self) -> None:
        """Each backend once, straight."""
        for backend in self.backends:
            path, body = request_for(backend, self.model)
            took, _, error = await _timed_post(self.session, backend.base_url + path, body, self.clock)
            if error is None:
                self.direct.setdefault(backend.name, []).append(took)
            else:
                self.errors.append(f"{backend.name}: {error}")

    async def via_gateway(self, i: int) -> None:
        """One request through the gateway, in the API of the backends in turn (the gateway routes it)."""
        path, body = request_for(self.backends[i % len(self.backends)], self.model)
        took, served_by, error = await _timed_post(self.session, self.gateway_url + path, body, self.clock)
        if error is not None:
            self.errors.append(f"gateway: {error}")
        elif served_by is not None:
            self.through.append((served_by, took))


async def _pairs(
    session: aiohttp.ClientSession,
    gateway_url: str,
    backends: Sequence[BackendRef],
    model: str,
    requests: int,
    clock: Callable[[], float],
    reporter: events.Reporter,
    subject: str,
) -> AddedLatency:
    rounds = _Rounds(session, gateway_url, backends, model, clock)
    for i in range(requests):
        # the gateway's request goes first in every other round: whatever the one after a request gains or
        # loses (a backend's prompt cache, a connection it kept) falls on both sides alike
        if i % 2:
            await rounds.straight()
            await rounds.via_gateway(i)
        else:
            await rounds.via_gateway(i)
            await rounds.straight()
        reporter(events.StepProgress(subject, "measuring", i + 1, requests))
    return _result(model, requests, rounds.direct, rounds.through, rounds.errors)


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
