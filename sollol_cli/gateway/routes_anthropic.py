"""The Anthropic Messages API (`POST /v1/messages`), as Claude Code and other agents use it. Current Ollama
and llama-server both speak it natively, so it is routed and passed through like the OpenAI routes; errors
keep Anthropic's shape (`{"type": "error", "error": {...}}`, see `problems.error_body`)."""

from __future__ import annotations

from aiohttp import web

from sollol_cli.gateway import validate
from sollol_cli.gateway.routes_openai import relay
from sollol_cli.gateway.streaming import ANTHROPIC_SSE

_OBJECTS = (validate.list_of(validate.is_object), "a list of objects")
MESSAGES: validate.Spec = {
    "model": validate.STRING, "messages": _OBJECTS, "max_tokens": validate.INTEGER, "stream": validate.BOOL,
    "system": (validate.any_of(validate.is_str, validate.list_of(validate.is_object)), "a string or a list of objects"),
    "tools": _OBJECTS, "stop_sequences": validate.STRINGS,
}  # fmt: skip


async def messages(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/messages", MESSAGES, ANTHROPIC_SSE)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
