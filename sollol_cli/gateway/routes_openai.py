"""The OpenAI-compatible API (`/v1/*`). Ollama and llama-server both speak it natively, so requests are
routed like any other and passed through unchanged; streamed answers are forwarded byte for byte."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sollol_cli.gateway import catalog, validate
from sollol_cli.gateway.accesslog import Exchange
from sollol_cli.gateway.problems import Problem
from sollol_cli.gateway.state import exchange, gateway
from sollol_cli.gateway.streaming import SSE, collect, json_response, stream
from sollol_cli.names import same_model
from sollol_cli.runtime.dispatch import Trace, single

_TEXT = (validate.any_of(validate.is_str, validate.list_of(validate.is_str)), "a string or a list of strings")
_OBJECTS = (validate.list_of(validate.is_object), "a list of objects")
CHAT: validate.Spec = {
    "model": validate.STRING, "messages": _OBJECTS, "stream": validate.BOOL, "stream_options": validate.OBJECT,
    "tools": _OBJECTS,
}  # fmt: skip
COMPLETIONS: validate.Spec = {
    "model": validate.STRING, "prompt": _TEXT, "stream": validate.BOOL, "stream_options": validate.OBJECT,
}  # fmt: skip
EMBEDDINGS: validate.Spec = {"model": validate.STRING, "input": _TEXT}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generation(request, "/v1/chat/completions", CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generation(request, "/v1/completions", COMPLETIONS)


async def _generation(request: web.Request, path: str, spec: validate.Spec) -> web.StreamResponse:
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    validate.check(body, spec)
    ex.model = validate.require_model(body)
    trace = Trace(ex.model)
    dispatcher = state.runtime.dispatcher
    if body.get("stream") is True:
        tokens = SseTokens(ex)
        chunks = dispatcher.stream_call(trace, lambda backend: backend.openai_stream(path, body))
        return await stream(request, ex, chunks, SSE, trace=trace, watch=tokens.feed)
    [result] = await collect(
        ex, dispatcher.stream_call(trace, lambda b: single(b.openai_json(path, body))), trace=trace
    )
    usage = result.get("usage") if isinstance(result, dict) else None
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        ex.tokens = usage["completion_tokens"]
    return json_response(result)


async def embeddings(request: web.Request) -> web.Response:
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    validate.check(body, EMBEDDINGS)
    ex.model = validate.require_model(body)
    trace = Trace(ex.model)
    chunks = state.runtime.dispatcher.stream_call(trace, lambda b: single(b.openai_json("/v1/embeddings", body)))
    [result] = await collect(ex, chunks, trace=trace)
    return json_response(result)


async def models(request: web.Request) -> web.Response:
    listed = await catalog.list_models(gateway(request))
    return json_response({"object": "list", "data": [catalog.openai_model(m) for m in listed]})


async def model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    for entry in await catalog.list_models(gateway(request)):
        if same_model(name, str(entry["name"])):
            return json_response(catalog.openai_model(entry))
    raise Problem(404, f"model '{name}' not found")


class SseTokens:
    """Counts generated tokens in a passed-through SSE stream: the `usage` of the last event when the backend
    sends one, else one token per event that carries text (both servers send one token per event)."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.tail = b""
        self.events = 0

    def feed(self, data: bytes) -> None:
        *events, self.tail = (self.tail + data).split(b"\n\n")
        for event in events:
            if b'"usage"' in event:
                completion = _usage_tokens(event)
                if completion is not None:
                    self.ex.tokens = completion
                    continue
            if (b'"content":"' in event and b'"content":""' not in event) or (
                b'"text":"' in event and b'"text":""' not in event
            ):
                self.events += 1
                self.ex.tokens = self.events


def _usage_tokens(event: bytes) -> int | None:
    try:
        data: Any = json.loads(event.removeprefix(b"data:").strip())
    except ValueError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return value if isinstance(value, int) else None


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
