"""A program written against the official `ollama` client runs unchanged on sollol's API: only the
constructor differs (`ollama.Client(host=...)` -> `SyncCluster(manifest)`, `ollama.AsyncClient` ->
`AsyncCluster`). Each program runs once straight against a stand-in and once through a cluster of that
one stand-in, and must see the same things."""

from __future__ import annotations

from typing import Any

import ollama

from sollol_cli.api import AsyncCluster, SyncCluster
from tests.unit.api.conftest import cluster_of
from tests.unit.gateway.conftest import MakeStandin

QUESTION = [{"role": "user", "content": "why is the sea blue?"}]


def program(client: ollama.Client) -> dict[str, Any]:
    """Typical ollama-python code: keys and attributes, dicts and the client's own objects, streams."""
    out: dict[str, Any] = {"models": [m.model for m in client.list().models]}
    reply = client.chat(model="tiny", messages=QUESTION, options={"seed": 1, "num_predict": 5})
    out["chat"] = (reply["message"]["content"], reply.message.role, reply.done, reply.done_reason, reply.eval_count)
    history = [*QUESTION, reply.message, ollama.Message(role="user", content="and the sky?")]
    stream = client.chat(model="tiny", messages=history, stream=True, options=ollama.Options(seed=2, num_predict=7))
    out["stream"] = "".join(part["message"]["content"] for part in stream)
    generated = client.generate(model="tiny", prompt="hello", system="be brief", options={"num_predict": 4})
    out["generate"] = (generated.response, generated["done"], generated.context, generated.get("eval_count"))
    out["pieces"] = [
        part.response for part in client.generate("tiny", "count", stream=True, options={"num_predict": 3})
    ]
    out["embed"] = client.embed(model="tiny", input=["one", "two"]).embeddings
    out["ps"] = [(m.model, m.details.family if m.details else None) for m in client.ps().models]
    shown = client.show("tiny")
    out["show"] = (shown.modelinfo, shown.template, shown.capabilities)
    try:
        client.chat(model="not-there", messages=QUESTION)
    except Exception as exc:  # ollama.ResponseError there, sollol's ModelNotFound here: both say "not found"
        out["missing"] = "not found" in str(exc)
    return out


async def async_program(client: ollama.AsyncClient) -> dict[str, Any]:
    out: dict[str, Any] = {"models": [m.model for m in (await client.list()).models]}
    reply = await client.chat(model="tiny", messages=QUESTION, options={"seed": 1, "num_predict": 5})
    out["chat"] = (reply.message.content, reply.done_reason, reply.eval_count)
    out["stream"] = [
        part.message.content async for part in await client.chat("tiny", QUESTION, stream=True, options={"seed": 4})
    ]
    out["generate"] = (await client.generate("tiny", "hello", options={"num_predict": 4})).response
    out["embed"] = (await client.embed("tiny", "one")).embeddings
    return out


def test_a_sync_ollama_program_runs_on_sync_cluster(standin: MakeStandin) -> None:
    expected = program(ollama.Client(host=standin("a").url))
    with SyncCluster(cluster_of([standin("a")])) as cluster:
        got = program(cluster)  # type: ignore[arg-type]  # not an ollama.Client, but used as one
    assert got == expected
    assert expected["missing"] is True


async def test_an_async_ollama_program_runs_on_async_cluster(standin: MakeStandin) -> None:
    expected = await async_program(ollama.AsyncClient(host=standin("a").url))
    cluster = AsyncCluster(cluster_of([standin("a")]))  # no `async with`, as an ollama.AsyncClient is used
    try:
        got = await async_program(cluster)  # type: ignore[arg-type]
    finally:
        await cluster.close()
    assert got == expected
