"""The gateway in front of Ollama stand-ins (tests/standin), used through the official `ollama` and `openai`
clients. The stand-ins answer deterministically and put their own name in the first token, so every
answer through the gateway is checked against the same request sent straight to the instance that served
it. Sync clients run in worker threads while the gateway serves on the test's event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import ollama
import openai
import pytest
from aiohttp import web

from sollol_cli.backends.http import close_session
from sollol_cli.gateway.app import create_app
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.session import ClusterRuntime, open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinFactory, StandinHandle, SubprocessStandin
from tests.harness.rng import NameOrder

MESSAGES = [{"role": "user", "content": "why is the sea blue?"}]
OPTIONS = {"seed": 3, "num_predict": 6}


@dataclass
class Served:
    url: str
    standins: list[StandinHandle]
    runtime: ClusterRuntime

    def by_name(self, text: str) -> StandinHandle:
        """The instance whose name starts `text` (`<name> ...`)."""
        return next(s for s in self.standins if text.startswith(f"<{s.name}>"))


def manifest(standins: list[StandinHandle], pull: list[str] | None = None) -> Cluster:
    """Each node's slots are its stand-in's `num_parallel`, as OLLAMA_NUM_PARALLEL says on a real node."""
    nodes = [
        {
            "name": s.name, "address": "127.0.0.1", "transport": "local",
            "ollama": {"port": s.port, "models": pull or [],
                       "environment": {"OLLAMA_NUM_PARALLEL": str(s.config.num_parallel)}},
        }
        for s in standins
    ]  # fmt: skip
    return Cluster.model_validate({"name": "standins", "nodes": nodes})


@pytest.fixture
async def serve_standins() -> AsyncIterator[Callable[..., Any]]:
    cleanups: list[Callable[[], Any]] = []

    async def start(standins: list[StandinHandle], *, pull: list[str] | None = None) -> Served:
        opened = AsyncExitStack()
        runtime = await opened.enter_async_context(open_cluster(manifest(standins, pull), Settings(), rng=NameOrder()))
        runner = web.AppRunner(create_app(runtime, health_loop=False), handler_cancellation=True, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        cleanups.append(runner.cleanup)
        cleanups.append(opened.aclose)
        return Served(f"http://127.0.0.1:{runner.addresses[0][1]}", standins, runtime)

    yield start
    for cleanup in cleanups:
        await cleanup()
    await close_session()


def ollama_calls(served: Served) -> dict[str, Any]:
    client = ollama.Client(host=served.url)
    out: dict[str, Any] = {
        "list": client.list(),
        "ps": client.ps(),
        "show": client.show("tiny"),
        "chat": client.chat(model="tiny", messages=MESSAGES, options=OPTIONS),
        "chat_stream": list(client.chat(model="tiny", messages=MESSAGES, options=OPTIONS, stream=True)),
        "generate": client.generate(model="tiny", prompt="hello", options=OPTIONS),
        "generate_stream": list(client.generate(model="tiny", prompt="hello", options=OPTIONS, stream=True)),
        "embed": client.embed(model="tiny", input=["a", "b"]),
        "pull": list(client.pull("extra", stream=True)),
        "pull_once": client.pull("extra"),
    }
    # The same requests straight to the instance that answered each through the gateway.
    chat_direct = ollama.Client(host=served.by_name(out["chat"].message.content).host)
    out["chat_direct"] = chat_direct.chat(model="tiny", messages=MESSAGES, options=OPTIONS)
    stream_text = "".join(p.message.content for p in out["chat_stream"])
    out["chat_stream_direct"] = ollama.Client(host=served.by_name(stream_text).host).chat(
        model="tiny", messages=MESSAGES, options=OPTIONS
    )
    generated = ollama.Client(host=served.by_name(out["generate"].response).host)
    out["generate_direct"] = generated.generate(model="tiny", prompt="hello", options=OPTIONS)
    out["embed_direct"] = ollama.Client(host=served.standins[0].host).embed(model="tiny", input=["a", "b"])
    out["show_direct"] = ollama.Client(host=served.standins[0].host).show("tiny")
    return out


async def test_ollama_sync_client(ollama_standin: StandinFactory, serve_standins: Callable[..., Any]) -> None:
    extra = {"name": "extra:latest", "size": 1000}
    standins = [ollama_standin({"name": n, "pullable": [extra]}) for n in ("s1", "s2")]
    served = await serve_standins(standins, pull=["extra"])
    out = await asyncio.to_thread(ollama_calls, served)
    assert [m.model for m in out["list"].models] == ["tiny:latest"]  # on both, listed once
    assert out["show"].modelinfo == out["show_direct"].modelinfo and out["show"].details.family == "llama"
    chat = out["chat"]
    assert chat.message.content == out["chat_direct"].message.content
    assert chat.eval_count == 6 and chat.done_reason == "length"
    stream = out["chat_stream"]
    assert "".join(p.message.content for p in stream) == out["chat_stream_direct"].message.content
    assert len(stream) == 7 and stream[-1].done and stream[-1].eval_count == 6
    assert out["generate"].response == out["generate_direct"].response
    assert out["generate"].context == out["generate_direct"].context
    assert (
        "".join(p.response for p in out["generate_stream"]).split(">", 1)[1]
        == out["generate"].response.split(">", 1)[1]
    )
    assert out["embed"].embeddings == out["embed_direct"].embeddings and len(out["embed"].embeddings[0]) == 32
    statuses = [p.status for p in out["pull"]]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    progress = [p for p in out["pull"] if p.digest]
    assert progress[-1].completed == progress[-1].total  # both nodes done: one bar for the cluster
    assert out["pull_once"].status == "success"
    for standin in standins:  # the model really landed on both nodes the manifest assigns it to
        assert "extra:latest" in [m.model for m in ollama.Client(host=standin.host).list().models]
    loaded = {m.model for m in (await asyncio.to_thread(ollama.Client(host=served.url).ps)).models}
    assert loaded == {"tiny:latest"}


async def test_ollama_async_client(ollama_standin: StandinFactory, serve_standins: Callable[..., Any]) -> None:
    standin = ollama_standin({"name": "solo"})
    served = await serve_standins([standin])
    client, direct = ollama.AsyncClient(host=served.url), ollama.AsyncClient(host=standin.host)
    chat = await client.chat(model="tiny", messages=MESSAGES, options=OPTIONS)
    assert chat.message.content == (await direct.chat(model="tiny", messages=MESSAGES, options=OPTIONS)).message.content
    parts = [p async for p in await client.chat(model="tiny", messages=MESSAGES, options=OPTIONS, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == chat.message.content
    generated = await client.generate(model="tiny", prompt="hello", options=OPTIONS)
    assert generated.response == (await direct.generate(model="tiny", prompt="hello", options=OPTIONS)).response
    pieces = [p.response async for p in await client.generate(model="tiny", prompt="hello", stream=True)]
    assert pieces[0] == "<solo>"
    assert [m.model for m in (await client.list()).models] == ["tiny:latest"]
    assert (await client.show("tiny")).details.family == "llama"
    assert (await client.embed(model="tiny", input="x")).embeddings == (
        await direct.embed(model="tiny", input="x")
    ).embeddings
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="nope", messages=MESSAGES)
    assert missing.value.status_code == 404


async def test_chat_with_tools_format_and_images(
    ollama_standin: StandinFactory, serve_standins: Callable[..., Any]
) -> None:
    """The stand-in honours `format` (its answer becomes a JSON object) and accepts tools and images; that
    the gateway forwards every field unchanged is checked field by field in test_routes_ollama."""
    standin = ollama_standin({"name": "solo"})
    served = await serve_standins([standin])
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}
    request: dict[str, Any] = {
        "model": "tiny", "messages": [{"role": "user", "content": "hi", "images": ["iVBORw0KGgo="]}],
        "tools": [tool], "format": "json", "options": {"seed": 3},
    }  # fmt: skip
    reply = await ollama.AsyncClient(host=served.url).chat(**request)
    direct = await ollama.AsyncClient(host=standin.host).chat(**request)
    assert reply.message.content == direct.message.content
    assert json.loads(reply.message.content)["instance"] == "solo"


def openai_calls(url: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    settings: dict[str, Any] = {"seed": 3, "max_tokens": 6}
    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, **settings)  # type: ignore[arg-type]
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, stream=True, **settings)  # type: ignore[arg-type]
    completion = client.completions.create(model="tiny", prompt="hello", **settings)
    completion_stream = client.completions.create(model="tiny", prompt="hello", stream=True, **settings)
    return {
        "models": [m.id for m in client.models.list()],
        "model": client.models.retrieve("tiny:latest").id,
        "chat": chat,
        "chat_stream": "".join(c.choices[0].delta.content or "" for c in stream if c.choices),
        "completion": completion.choices[0].text,
        "completion_stream": "".join(c.choices[0].text for c in completion_stream if c.choices),
        "embeddings": client.embeddings.create(model="tiny", input=["a", "b"]).data,
    }


async def test_openai_client(ollama_standin: StandinFactory, serve_standins: Callable[..., Any]) -> None:
    standin = ollama_standin({"name": "solo"})
    served = await serve_standins([standin])
    out = await asyncio.to_thread(openai_calls, served.url)
    direct = await asyncio.to_thread(openai_calls, standin.url)
    assert out["models"] == direct["models"] == ["tiny:latest"] and out["model"] == "tiny:latest"
    assert out["chat"].choices[0].message.content == direct["chat"].choices[0].message.content
    assert out["chat"].usage.completion_tokens == 6
    assert out["chat_stream"] == direct["chat_stream"] == out["chat"].choices[0].message.content
    assert out["completion"] == direct["completion"] == out["completion_stream"] != ""
    assert [d.embedding for d in out["embeddings"]] == [d.embedding for d in direct["embeddings"]]


async def stream_text(session: aiohttp.ClientSession, url: str, prompt: str) -> tuple[str | None, str, str | None]:
    body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "options": {"num_predict": 40}}
    async with session.post(url + "/api/chat", json=body) as resp:
        chunks = [json.loads(line) async for line in resp.content if line.strip()]
    return (
        resp.headers.get("X-Sollol-Backend"),
        "".join(c.get("message", {}).get("content", "") for c in chunks),
        chunks[-1].get("error"),
    )


async def test_64_streams_spread_by_slots_nothing_lost_duplicated_or_reordered(
    ollama_standin: StandinFactory, serve_standins: Callable[..., Any]
) -> None:
    slots = {"s1": 2, "s2": 4, "s3": 6}
    standins = [
        ollama_standin({"name": name, "num_parallel": n, "tokens_per_second": 200}) for name, n in slots.items()
    ]
    served = await serve_standins(standins)
    url_of = {s.name: s.url for s in standins}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(*(stream_text(session, served.url, f"q{i}") for i in range(64)))
        expected = await asyncio.gather(
            *(stream_text(session, url_of[str(backend)], f"q{i}") for i, (backend, _, _) in enumerate(results))
        )
    for (backend, text, error), (_, direct_text, _) in zip(results, expected, strict=True):
        assert error is None and text.startswith(f"<{backend}>")
        assert text == direct_text  # every token, once, in order
    for standin in standins:
        assert standin.stats()["max_concurrency"] <= slots[standin.name]  # never more than its slots
    counts = {name: sum(1 for backend, _, _ in results if backend == name) for name in slots}
    assert sum(counts.values()) == 64
    for name, n in slots.items():  # each node's share follows its share of the slots (64 * n / 12)
        assert abs(counts[name] - 64 * n / 12) <= 5, counts


async def test_first_token_goes_out_as_soon_as_the_backend_sends_it(
    ollama_standin: StandinFactory, serve_standins: Callable[..., Any]
) -> None:
    """What the gateway adds to the time to first token is nothing it waits for: the client has the first token
    while the stand-in holds every later one, and the gateway made no other request of it on the way. (How
    many milliseconds that takes is benchmarks/gateway.py's to measure, not a test's.)"""
    standin = ollama_standin({"name": "solo", "faults": {"hold_after_tokens": 1}})
    served = await serve_standins([standin])
    body = {"model": "tiny", "messages": MESSAGES, "options": {"num_predict": 3}}
    before = standin.stats()["requests"]
    async with aiohttp.ClientSession() as session:
        async with session.post(served.url + "/api/chat", json=body) as resp:
            through = json.loads(await resp.content.readline())
            stats = standin.stats()
            assert (stats["held"], stats["completed"]) == (1, 0)
            standin.release()
            await resp.read()
        async with session.post(standin.url + "/api/chat", json=body) as resp:
            direct_first = json.loads(await resp.content.readline())
            standin.release()
            await resp.read()
    assert through["message"] == direct_first["message"]
    added = {k: v - before.get(k, 0) for k, v in stats["requests"].items() if v != before.get(k, 0)}
    assert added == {"POST /api/chat": 1}


async def test_killed_backend_under_load(ollama_standin: StandinFactory, serve_standins: Callable[..., Any]) -> None:
    """Each stand-in holds its two streams after the first token: the victim is killed with exactly two of its
    own under way and four more waiting in the gateway's queue."""
    held = {"num_parallel": 2, "faults": {"hold_after_tokens": 1}}
    victim = ollama_standin({"name": "victim", **held}, subprocess=True)
    survivor = ollama_standin({"name": "survivor", **held})
    served = await serve_standins([victim, survivor])
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(stream_text(session, served.url, f"k{i}")) for i in range(8)]
        for standin in (victim, survivor):
            await asyncio.to_thread(standin.wait_until, lambda s: s["held"] == 2)
        survivor.clear_faults()  # what reaches it from now on streams straight through
        assert isinstance(victim, SubprocessStandin)
        victim.process.kill()
        survivor.release()
        results = await asyncio.gather(*tasks)
        broken = [r for r in results if r[2] is not None]
        whole = [r for r in results if r[2] is None]
        assert [backend for backend, _, _ in broken] == ["victim", "victim"]  # only what it was running
        assert len(whole) == 6 and {backend for backend, _, _ in whole} == {"survivor"}
        backend, text, error = await stream_text(session, served.url, "after")
        assert error is None and backend == "survivor" and text.startswith("<survivor>")
