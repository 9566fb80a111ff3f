"""`sollol serve` in front of two real llama-server nodes running the tiny model, used through the official
`ollama` and `openai` clients; answers are checked against llama-server itself (greedy decoding is exact)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import openai
import pytest

from sollol_cli.backends.base import BackendRef, collect
from sollol_cli.backends.http import close_session
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from tests.harness.llama import ServerGroup, ServerProcess

pytestmark = pytest.mark.real

GREEDY = {"temperature": 0, "top_k": 1, "seed": 42, "num_predict": 12}
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]
SLOTS = 2


@dataclass
class Served:
    url: str
    nodes: list[ServerProcess]
    model: str  # the name llama-server reports (the file name without .gguf)


@pytest.fixture
async def served(llama_servers: ServerGroup, tiny_gguf: Path) -> AsyncIterator[Served]:
    extra = ("--embeddings", "--pooling", "mean")
    nodes = [llama_servers.llama_server(Path(tiny_gguf), slots=SLOTS, context=1024, extra=extra) for _ in range(2)]
    cluster = Cluster.model_validate(
        {
            "name": "real",
            "nodes": [
                {"name": f"n{i}", "address": "127.0.0.1", "transport": "local",
                 "llamacpp": {"port": node.port, "model": str(tiny_gguf), "slots": SLOTS}}
                for i, node in enumerate(nodes, 1)
            ],
        }
    )  # fmt: skip
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(cluster, Settings(), ServeOptions("127.0.0.1", 0, grace_s=5), stop, on_listening=listening.set_result)
    )
    try:
        url = (await asyncio.wait_for(listening, 60)).url
        yield Served(url, nodes, Path(tiny_gguf).stem)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await close_session()


def direct(node: ServerProcess, name: str = "n1") -> LlamaServerBackend:
    return LlamaServerBackend(BackendRef(name, "llamacpp", node.host, node.port))


def ollama_session(url: str, model: str) -> dict[str, Any]:
    client = ollama.Client(host=url)
    out: dict[str, Any] = {}
    out["list"] = [m.model for m in client.list().models]
    out["ps"] = client.ps().models
    out["show"] = client.show(model)
    out["chat"] = client.chat(model=model, messages=MESSAGES, options=GREEDY)
    out["chat_stream"] = list(client.chat(model=model, messages=MESSAGES, options=GREEDY, stream=True))
    out["generate"] = client.generate(model=model, prompt="Once upon a time", options=GREEDY)
    out["generate_stream"] = list(client.generate(model=model, prompt="Once upon a time", options=GREEDY, stream=True))
    out["embed"] = client.embed(model=model, input=["the sea", "a mountain"]).embeddings
    return out


async def test_ollama_clients_against_llama_server_nodes(served: Served) -> None:
    out = await asyncio.to_thread(ollama_session, served.url, served.model)
    name = f"{served.model}:latest"
    assert out["list"] == [name]  # both nodes have it; listed once
    assert [m.model for m in out["ps"]] == [name, name]
    async with aiohttp.ClientSession() as session:  # where each is loaded (a field the official client drops)
        ps = await (await session.get(served.url + "/api/ps")).json()
    assert sorted((m["model"], m["sollol"]["backend"]) for m in ps["models"]) == [(name, "n1"), (name, "n2")]
    assert out["show"].details.format == "gguf" and "completion" in (out["show"].capabilities or [])
    # The same answer as llama-server gives when asked directly (greedy decoding is deterministic).
    expected = await collect(
        direct(served.nodes[0]).chat({"model": served.model, "messages": MESSAGES, "options": GREEDY})
    )
    chat = out["chat"]
    assert chat.message.content == expected["message"]["content"] and chat.message.content
    assert chat.eval_count == expected["eval_count"] == 12 and chat.done_reason == "length"
    stream = out["chat_stream"]
    assert "".join(p.message.content for p in stream) == chat.message.content
    assert stream[-1].done and not any(p.done for p in stream[:-1])
    generated = out["generate"]
    assert generated.response and generated.eval_count == 12
    assert "".join(p.response for p in out["generate_stream"]) == generated.response
    vectors = out["embed"]
    assert len(vectors) == 2 and all(len(v) == 256 for v in vectors)
    assert all(math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-3) for v in vectors)
    assert vectors[0] != vectors[1]


async def test_ollama_async_client_against_llama_server_nodes(served: Served) -> None:
    client = ollama.AsyncClient(host=served.url)
    chat = await client.chat(model=served.model, messages=MESSAGES, options=GREEDY)
    parts = [p async for p in await client.chat(model=served.model, messages=MESSAGES, options=GREEDY, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == chat.message.content != ""
    generated = await client.generate(model=served.model, prompt="Once upon a time", options=GREEDY)
    assert generated.eval_count == 12
    assert [m.model for m in (await client.list()).models] == [f"{served.model}:latest"]
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="nope", messages=MESSAGES)
    assert missing.value.status_code == 404


def openai_session(url: str, model: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    settings: dict[str, Any] = {"temperature": 0, "seed": 42, "max_tokens": 12}
    out: dict[str, Any] = {"models": [m.id for m in client.models.list()]}
    out["chat"] = client.chat.completions.create(model=model, messages=MESSAGES, **settings)  # type: ignore[arg-type]
    stream = client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **settings)  # type: ignore[arg-type]
    out["chat_stream"] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    out["embeddings"] = client.embeddings.create(model=model, input=["the sea"]).data
    return out


async def test_openai_client_against_llama_server_nodes(served: Served) -> None:
    out = await asyncio.to_thread(openai_session, served.url, served.model)
    assert out["models"] == [f"{served.model}:latest"]
    text = out["chat"].choices[0].message.content
    assert text and out["chat_stream"] == text
    assert out["chat"].usage.completion_tokens == 12
    ollama_chat = await ollama.AsyncClient(host=served.url).chat(model=served.model, messages=MESSAGES, options=GREEDY)
    assert ollama_chat.message.content == text  # both APIs reach the same model with the same prompt
    assert len(out["embeddings"][0].embedding) == 256


async def stream_chat(
    session: aiohttp.ClientSession, url: str, model: str, tokens: int = 24
) -> tuple[str | None, str, str | None]:
    body = {"model": model, "messages": MESSAGES, "options": {**GREEDY, "num_predict": tokens}}
    async with session.post(url + "/api/chat", json=body) as resp:
        chunks = [json.loads(line) async for line in resp.content if line.strip()]
    text = "".join(c.get("message", {}).get("content", "") for c in chunks)
    return resp.headers.get("X-Sollol-Backend"), text, chunks[-1].get("error")


async def test_concurrent_streams_spread_over_the_nodes(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(*(stream_chat(session, served.url, served.model) for _ in range(8)))
    assert all(error is None for _, _, error in results)
    assert len({text for _, text, _ in results}) == 1  # greedy: every answer whole and identical
    backends = [backend for backend, _, _ in results]
    assert backends.count("n1") >= 2 and backends.count("n2") >= 2


async def test_a_killed_node_under_load(served: Served) -> None:
    async with aiohttp.ClientSession() as session:
        # Long answers, so that when n1 dies it has streams running and others are still waiting for a slot.
        tasks = [asyncio.create_task(stream_chat(session, served.url, served.model, 400)) for _ in range(8)]
        # every slot of both nodes past its first token (the rest queued in the gateway): n1 dies mid-stream
        while [await processing(session, node, decoded=True) for node in served.nodes] != [SLOTS, SLOTS]:
            assert not any(task.done() for task in tasks), "a stream ended before the nodes were all busy"
            await asyncio.sleep(0.01)
        served.nodes[0].process.kill()
        results = await asyncio.gather(*tasks)
        broken = [r for r in results if r[2] is not None]
        assert len(broken) == SLOTS and all(backend == "n1" for backend, _, _ in broken)
        whole = [r for r in results if r[2] is None]
        assert len(whole) == 8 - SLOTS and {backend for backend, _, _ in whole} == {"n2"}
        assert len({text for _, text, _ in whole}) == 1
        backend, text, error = await stream_chat(session, served.url, served.model, 400)
        assert error is None and backend == "n2" and text == whole[0][1]  # the gateway is still up


async def processing(session: aiohttp.ClientSession, node: ServerProcess, *, decoded: bool = False) -> int:
    """How many of the llama-server's slots are generating right now (its own /slots); with `decoded`, only
    those that have produced a token already (its first token may have reached the client)."""
    async with session.get(node.url + "/slots") as resp:
        slots = [slot for slot in await resp.json() if slot.get("is_processing")]
    if decoded:
        slots = [slot for slot in slots if any(t.get("n_decoded", 0) > 0 for t in slot.get("next_token", []))]
    return len(slots)


async def test_first_token_arrives_while_the_node_still_generates(served: Served) -> None:
    """What the gateway adds to the time to first token is nothing it waits for: the first token comes through
    while the llama-server is still generating the rest of a long answer. (The milliseconds are
    benchmarks/gateway.py's to measure.)"""
    body = {"model": served.model, "messages": MESSAGES, "stream": True, "max_tokens": 400, "temperature": 0}
    async with aiohttp.ClientSession() as session, session.post(served.url + "/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if b'"content":"' in line and b'"content":""' not in line:
                break
        else:
            raise AssertionError("no token arrived")
        generating = sum([await processing(session, node) for node in served.nodes])
        resp.close()
    assert generating == 1
