"""The OpenAI-compatible API (`/v1/*`: chat completions, completions, the Responses API, embeddings,
models). Ollama and llama-server both speak it natively, so requests are routed like any other and passed
through unchanged; streamed answers are forwarded byte for byte."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from aiohttp import web

from sollol_cli.gateway import validate
from sollol_cli.gateway.accesslog import Exchange
from sollol_cli.gateway.problems import Problem
from sollol_cli.gateway.state import exchange, gateway
from sollol_cli.gateway.streaming import SSE, Framing, collect, json_response, stream
from sollol_cli.names import same_model
from sollol_cli.runtime import catalog
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
RESPONSES: validate.Spec = {
    "model": validate.STRING, "input": (validate.any_of(validate.is_str, validate.list_of(validate.is_object)),
    "a string or a list of objects"), "instructions": validate.STRING, "stream": validate.BOOL, "tools": _OBJECTS,
    "max_output_tokens": validate.INTEGER,
}  # fmt: skip


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/chat/completions", CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/completions", COMPLETIONS)


async def responses(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/responses", RESPONSES)


async def relay(
    request: web.Request, path: str, spec: validate.Spec, framing: Framing[bytes] = SSE
) -> web.StreamResponse:
    """Route a generation to the backend holding its model and pass it through unchanged: streamed (SSE in
    the backend's own framing, each chunk the moment it arrives) or one JSON answer."""
    state, ex = gateway(request), exchange(request)
    body = validate.parse_body(await request.read())
    validate.check(body, spec)
    ex.model = validate.require_model(body)
    trace = Trace(ex.model)
    dispatcher = state.runtime.dispatcher
    if body.get("stream") is True:
        tokens = SseTokens(ex)
        chunks = dispatcher.stream_call(trace, lambda backend: backend.openai_stream(path, body))
        return await stream(request, ex, chunks, framing, trace=trace, watch=tokens.feed)
    [result] = await collect(
        ex, dispatcher.stream_call(trace, lambda b: single(b.openai_json(path, body))), trace=trace
    )
    generated = _usage_tokens(result)
    if generated is not None:
        ex.tokens = generated
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
    listed = await catalog.list_models(gateway(request).runtime)
    return json_response({"object": "list", "data": [openai_model(m) for m in listed]})


async def model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    for entry in await catalog.list_models(gateway(request).runtime):
        if same_model(name, str(entry["name"])):
            return json_response(openai_model(entry))
    raise Problem(404, f"model '{name}' not found")


def openai_model(entry: dict[str, Any]) -> dict[str, Any]:
    """A /api/tags entry as OpenAI's model object."""
    name = str(entry["name"])
    parts = name.rsplit(":", 1)[0].split("/")
    created = 0
    modified = entry.get("modified_at")
    if isinstance(modified, str) and modified:
        try:
            created = int(datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp())
        except ValueError:
            created = 0
    return {"id": name, "object": "model", "created": created, "owned_by": parts[-2] if len(parts) > 1 else "library"}


class SseTokens:
    """Counts generated tokens in a passed-through SSE stream: the `usage` the backend reports (OpenAI's
    `completion_tokens`, the Responses and Messages APIs' `output_tokens`), else one token per event that
    carries text (the servers send one token per event)."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.tail = b""
        self.events = 0

    def feed(self, data: bytes) -> None:
        *events, self.tail = (self.tail + data).split(b"\n\n")
        for event in events:
            if b'"usage"' in event:
                generated = _usage_tokens(_event_data(event))
                if generated is not None:
                    self.ex.tokens = generated
                    continue
            if _TEXT_EVENT.search(event) and not _SUMMARY_EVENT.match(event):
                self.events += 1
                self.ex.tokens = self.events


# "content" (chat), "text" (completions, Anthropic text_delta), "delta" (Responses output_text.delta)
_TEXT_EVENT = re.compile(rb'"(?:content|text|delta)":"[^"]')
# Responses events that repeat the whole text at the end (response.output_text.done, ...)
_SUMMARY_EVENT = re.compile(rb"event: *[\w.]*\.done\b")


def _event_data(event: bytes) -> Any:
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None


def _usage_tokens(data: Any) -> int | None:
    """Generated tokens in an answer's `usage` (at the top, or in a Responses event's `response`)."""
    if not isinstance(data, dict):
        return None
    usage = data.get("usage")
    if not isinstance(usage, dict) and isinstance(data.get("response"), dict):
        usage = data["response"].get("usage")
    if not isinstance(usage, dict):
        return None
    value = usage.get("completion_tokens", usage.get("output_tokens"))
    return value if isinstance(value, int) else None


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
