"""Structured outputs on a llama.cpp node through `sollol serve`: Ollama's `format` ("json" or a JSON schema)
on /api/chat and /api/generate, and OpenAI's `response_format` on /v1/chat/completions, give JSON that
parses (and fits the schema), the same answer llama-server gives directly (greedy decoding is exact).

The model is the `chat` preset: with the ChatML markers as plain text (the `tiny` preset) llama-server
itself refuses a schema on chat with "Failed to initialize samplers" (see llamacpp/tinymodel.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from tests.harness._gateway import serving
from tests.harness.llama import ServerGroup, ServerProcess

pytestmark = pytest.mark.real

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "size": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["ok", "size"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Is the sea big? Answer in JSON."}]
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": 64}
# A random-weight model fills free-form JSON with an endless string: with "json" only the start is checked.
SHORT = {**GREEDY, "num_predict": 16}


def fits_schema(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and set(data) == {"ok", "size"}
        and isinstance(data["ok"], bool)
        and isinstance(data["size"], int)
        and 0 <= data["size"] <= 99
    )


def direct_chat(server: ServerProcess, extra: dict[str, Any], max_tokens: int = 64) -> str:
    """llama-server's own /v1/chat/completions answer."""
    body = {"messages": MESSAGES, "temperature": 0, "top_k": 1, "seed": 1, "max_tokens": max_tokens, **extra}
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        data = json.load(response)
    return str(data["choices"][0]["message"]["content"])


@pytest.fixture
async def served(llama_servers: ServerGroup, chat_gguf: Path) -> AsyncIterator[tuple[str, ServerProcess]]:
    node = llama_servers.llama_server(chat_gguf, context=1024)
    cluster = Cluster.model_validate(
        {
            "name": "structured",
            "nodes": [
                {"name": "n1", "address": "127.0.0.1", "transport": "local",
                 "llamacpp": {"port": node.port, "model": str(chat_gguf), "alias": "tiny"}}
            ],
        }
    )  # fmt: skip
    async with serving(cluster, Settings()) as url:
        yield url, node


async def test_ollama_format_schema_and_json_on_chat_and_generate(served: tuple[str, ServerProcess]) -> None:
    url, node = served
    client = ollama.AsyncClient(host=url, timeout=300)
    chat = await client.chat(model="tiny", messages=MESSAGES, format=SCHEMA, options=GREEDY)
    assert chat.done_reason == "stop"
    assert fits_schema(json.loads(chat.message.content or ""))
    assert chat.message.content == direct_chat(node, {"response_format": {"type": "json_object", "schema": SCHEMA}})
    streamed = [
        part.message.content or ""
        async for part in await client.chat(model="tiny", messages=MESSAGES, format=SCHEMA, options=GREEDY, stream=True)
    ]
    assert "".join(streamed) == chat.message.content
    free = await client.chat(model="tiny", messages=MESSAGES, format="json", options=SHORT)
    assert free.message.content.startswith("{")
    assert free.message.content == direct_chat(node, {"response_format": {"type": "json_object"}}, 16)
    generated = await client.generate(model="tiny", prompt=MESSAGES[0]["content"], format=SCHEMA, options=GREEDY)
    assert generated.done_reason == "stop"
    assert fits_schema(json.loads(generated.response or ""))


async def test_openai_response_format(served: tuple[str, ServerProcess]) -> None:
    url, node = served
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", timeout=300)
    settings: dict[str, Any] = {"temperature": 0, "seed": 1, "max_tokens": 64, "extra_body": {"top_k": 1}}
    json_schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    answer = await client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        response_format=json_schema,  # type: ignore[arg-type]
        **settings,
    )
    content = answer.choices[0].message.content or ""
    assert answer.choices[0].finish_reason == "stop"
    assert fits_schema(json.loads(content))
    assert content == direct_chat(node, {"response_format": json_schema})
    free = await client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        **{**settings, "max_tokens": 16},
    )
    content = free.choices[0].message.content or ""
    assert content.startswith("{")
    assert content == direct_chat(node, {"response_format": {"type": "json_object"}}, 16)


def test_with_the_markers_as_plain_text_llama_server_refuses_a_schema_on_chat(
    llama_servers: ServerGroup, tiny_gguf: Path
) -> None:
    """The cause, shown on llama-server alone: the `tiny` preset's template markers are plain text, the
    generation prompt's first piece is " <", llama-server drops that leading space piece when it feeds the
    prompt to the grammar, and the grammar (which starts with "<|im_start|>assistant") rejects the rest."""
    server = llama_servers.llama_server(tiny_gguf, context=1024)
    with pytest.raises(urllib.error.HTTPError) as refused:
        direct_chat(server, {"response_format": {"type": "json_object", "schema": SCHEMA}})
    assert refused.value.code == 400
    assert json.load(refused.value)["error"]["message"].startswith("Failed to initialize samplers")
