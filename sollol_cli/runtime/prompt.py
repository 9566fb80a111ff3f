"""Turn `sollol run` arguments into an Ollama request, and collect the answer as it streams."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sollol_cli.backends.base import Chunk
from sollol_cli.errors import UsageError
from sollol_cli.runtime.dispatch import Dispatcher, Operation, Trace


@dataclass(frozen=True)
class PromptOptions:
    system: str | None = None
    temperature: float | None = None
    seed: int | None = None
    num_ctx: int | None = None
    num_predict: int | None = None
    format: str | None = None  # "json"

    def ollama_options(self) -> dict[str, Any]:
        values = {
            "temperature": self.temperature,
            "seed": self.seed,
            "num_ctx": self.num_ctx,
            "num_predict": self.num_predict,
        }
        return {k: v for k, v in values.items() if v is not None}


def parse_chat(text: str) -> list[dict[str, Any]]:
    """`--chat` input: a JSON list of {role, content} messages, or plain text as one user message."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            messages = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--chat input looks like JSON but is not: {exc.msg} at line {exc.lineno}") from None
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise UsageError('--chat JSON must be a list like [{"role": "user", "content": "hi"}]')
        return messages
    return [{"role": "user", "content": text}]


def generate_request(model: str, prompt: str, options: PromptOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
    if options.system:
        body["system"] = options.system
    if options.format:
        body["format"] = options.format
    if opts := options.ollama_options():
        body["options"] = opts
    return body


def chat_request(model: str, messages: list[dict[str, Any]], options: PromptOptions) -> dict[str, Any]:
    if options.system and not any(m.get("role") == "system" for m in messages):
        messages = [{"role": "system", "content": options.system}, *messages]
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if options.format:
        body["format"] = options.format
    if opts := options.ollama_options():
        body["options"] = opts
    return body


def token_of(chunk: Chunk) -> str:
    if "message" in chunk:
        content = chunk["message"].get("content")
        return content if isinstance(content, str) else ""
    token = chunk.get("response", "")
    return token if isinstance(token, str) else ""


async def answer(
    dispatcher: Dispatcher, op: Operation, body: dict[str, Any], trace: Trace, on_token: Callable[[str], None]
) -> Chunk:
    """Stream one answer through the router; returns Ollama's final (`done: true`) object."""
    final: Chunk = {}
    async for chunk in dispatcher.stream(op, body, trace):
        token = token_of(chunk)
        if token:
            on_token(token)
        if chunk.get("done"):
            final = chunk
    return final
