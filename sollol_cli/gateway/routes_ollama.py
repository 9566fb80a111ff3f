"""The Ollama API (`/`, `/api/*`), routed through the same dispatcher `sollol run` uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sollol_cli.backends.base import Backend, Chunk, Unsupported, aggregate
from sollol_cli.errors import ModelNotFound
from sollol_cli.gateway import validate
from sollol_cli.gateway.accesslog import Exchange
from sollol_cli.gateway.problems import Problem
from sollol_cli.gateway.pull import merged_pull, pull_targets
from sollol_cli.gateway.state import OLLAMA_COMPAT_VERSION, GatewayState, exchange, gateway
from sollol_cli.gateway.streaming import NDJSON, collect, json_response, stream
from sollol_cli.runtime import catalog
from sollol_cli.runtime.dispatch import Operation, Trace
from sollol_cli.runtime.monitor import BackendView

_UNSUPPORTED = {
    "/api/create": "create the model on a node with `ollama create`, then list it in the manifest",
    "/api/push": "push from a node with `ollama push`",
    "/api/blobs/{digest}": "blobs belong to `ollama create` on a node",
}


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    """The oldest version among the Ollama nodes: the cluster only does what every node does."""
    versions = []
    for view in gateway(request).runtime.monitor.views.values():
        if view.spec.ref.kind == "ollama" and view.status is not None and view.status.version:
            parsed = _version_tuple(view.status.version)
            if parsed is not None:
                versions.append((parsed, view.status.version))
    return json_response({"version": min(versions)[1] if versions else OLLAMA_COMPAT_VERSION})


def _version_tuple(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.split("-", 1)[0].split("."))
    except ValueError:
        return None


async def tags(request: web.Request) -> web.Response:
    return json_response({"models": await catalog.list_models(gateway(request).runtime)})


async def ps(request: web.Request) -> web.Response:
    return json_response({"models": await catalog.running_models(gateway(request).runtime)})


async def show(request: web.Request) -> web.Response:
    body = validate.parse_body(await request.read())
    validate.check(body, validate.NAMED)
    model = validate.require_model(body, legacy_name=True)
    exchange(request).model = model
    return json_response(await catalog.show(gateway(request).runtime, model))


async def generate(request: web.Request) -> web.StreamResponse:
    return await _generation(request, "generate", validate.check_generate)


async def chat(request: web.Request) -> web.StreamResponse:
    return await _generation(request, "chat", validate.check_chat)


async def _generation(
    request: web.Request, op: Operation, check: Callable[[dict[str, Any]], str]
) -> web.StreamResponse:
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    ex.model = check(body)
    trace = Trace(ex.model)
    chunks = state.runtime.dispatcher.stream(op, body, trace)
    if body.get("stream") is False:
        result = aggregate(await collect(ex, chunks, trace=trace))
        _count_tokens(ex, result)
        return json_response(result)

    def watch(chunk: Chunk) -> None:
        if chunk.get("done"):
            _count_tokens(ex, chunk)

    return await stream(request, ex, chunks, NDJSON, trace=trace, watch=watch)


def _count_tokens(ex: Exchange, final: Chunk) -> None:
    count = final.get("eval_count")
    if isinstance(count, int):
        ex.tokens = count


async def embed(request: web.Request) -> web.Response:
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    ex.model = validate.check_embed(body)
    trace = Trace(ex.model)
    [result] = await collect(ex, state.runtime.dispatcher.embed(body, trace), trace=trace)
    return json_response(result)


async def embeddings(request: web.Request) -> web.Response:
    """The legacy route: one prompt, one vector (answered through /api/embed on the backend)."""
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    ex.model = validate.check_embed(body, validate.EMBEDDINGS)
    prompt = body.get("prompt") or ""
    if not prompt:
        return json_response({"embedding": []})
    request_body = {k: v for k, v in body.items() if k != "prompt"} | {"input": prompt}
    trace = Trace(ex.model)
    [result] = await collect(ex, state.runtime.dispatcher.embed(request_body, trace), trace=trace)
    vectors = result.get("embeddings") or [[]]
    return json_response({"embedding": vectors[0]})


async def pull(request: web.Request) -> web.StreamResponse:
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    validate.check(body, validate.NAMED)
    ex.model = validate.require_model(body, legacy_name=True)
    targets = pull_targets(state.runtime.cluster, state.runtime.monitor, ex.model)
    ex.backend = ",".join(v.name for v in targets)
    forwarded = {k: v for k, v in body.items() if k != "name"} | {"model": ex.model}
    chunks = merged_pull(targets, forwarded)
    try:
        if body.get("stream") is False:
            return json_response((await collect(ex, chunks))[-1])
        return await stream(request, ex, chunks, NDJSON)
    finally:
        await _refresh(state, targets)


async def delete(request: web.Request) -> web.Response:
    body = validate.parse_body(await request.read())
    validate.check(body, validate.NAMED)
    model = validate.require_model(body, legacy_name=True)
    return await _on_holders(request, model, lambda backend: backend.delete(model))


async def copy(request: web.Request) -> web.Response:
    body = validate.parse_body(await request.read())
    validate.check(body, validate.COPY)
    source, destination = body.get("source"), body.get("destination")
    if not source or not destination:
        raise Problem(400, "source and destination are required")
    return await _on_holders(request, source, lambda backend: backend.copy(source, destination))


async def _on_holders(request: web.Request, model: str, action: Callable[[Backend], Awaitable[None]]) -> web.Response:
    """Run `action` on every Ollama node that holds `model`, then re-probe them (listings change at once)."""
    state, ex = gateway(request), exchange(request)
    ex.model = model
    holders = _ollama_holders(state, model)
    ex.backend = ",".join(v.name for v in holders)
    try:
        await asyncio.gather(*(action(catalog.client_of(v)) for v in holders))
    finally:
        await _refresh(state, holders)
    return web.Response()


def _ollama_holders(state: GatewayState, model: str) -> list[BackendView]:
    """The Ollama nodes that hold `model`, by their last probe; llama-server nodes cannot change their model."""
    holders = catalog.holders(state.runtime, model)
    ollama = [v for v in holders if v.spec.ref.kind == "ollama"]
    if not ollama and holders:
        names = ", ".join(v.name for v in holders)
        raise Unsupported(
            f"'{model}' is served by llama-server ({names}), whose model file sollol cannot change over HTTP"
        )
    if not ollama:
        raise ModelNotFound(f"model '{model}' not found")
    return ollama


async def _refresh(state: GatewayState, views: list[BackendView]) -> None:
    """Probe the changed nodes now so listings and routing see the change at once."""
    await asyncio.gather(*(state.runtime.monitor.probe_one(v) for v in views))


def unsupported(route: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        raise Problem(501, f"sollol serve does not support {route}: {_UNSUPPORTED[route]}")

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    app.router.add_post("/api/pull", pull)
    app.router.add_delete("/api/delete", delete)
    app.router.add_post("/api/copy", copy)
    for route in _UNSUPPORTED:
        app.router.add_route("*", route, unsupported(route))
