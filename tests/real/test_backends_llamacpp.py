"""LlamaServerBackend against a real llama-server running the tiny test model."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sollol_cli.backends.base import BackendRef, BackendUnavailable, StreamBroken, UpstreamError, collect
from sollol_cli.backends.http import Timeouts, close_session
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.llamacpp.build import LlamaCppBinaries
from tests.harness.llama import ServerGroup, ServerProcess, free_port, start_llama_server

pytestmark = pytest.mark.real

GREEDY = {"temperature": 0, "top_k": 1, "seed": 42}
SLOTS = 2
CONTEXT = 1024


def ref_of(server: ServerProcess, name: str = "node2") -> BackendRef:
    return BackendRef(name=name, kind="llamacpp", host=server.host, port=server.port, node=name)


@pytest.fixture(scope="module")
def server(
    llama_bins: LlamaCppBinaries, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One llama-server for the module; `--embeddings --pooling mean` so /v1/embeddings works too."""
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    running = start_llama_server(
        llama_bins.llama_server,
        tiny_gguf,
        log,
        context=CONTEXT,
        slots=SLOTS,
        extra=["--embeddings", "--pooling", "mean"],
    )
    yield running
    running.stop()


@pytest.fixture(autouse=True)
async def _shared_session() -> AsyncIterator[None]:
    yield
    await close_session()


async def direct(server: ServerProcess, path: str, body: dict[str, Any]) -> Any:
    """The same request sent straight to llama-server, for comparison."""
    async with aiohttp.ClientSession() as session, session.post(server.url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def direct_get(server: ServerProcess, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(server.url + path) as resp:
        return await resp.json()


async def test_probe_reports_the_model_slots_and_version(server: ServerProcess, tiny_gguf: Path) -> None:
    status = await LlamaServerBackend(ref_of(server)).probe()
    props = await direct_get(server, "/props")
    assert status.reachable and status.ready, status.error
    assert status.version == props["build_info"]
    assert status.slots == SLOTS
    assert status.in_flight == 0
    name = Path(tiny_gguf).stem
    assert status.loaded == [name]
    [model] = status.models
    assert model.name == name
    assert model.context_length == CONTEXT // SLOTS
    assert model.size is not None and model.size > 1_000_000
    assert model.parameter_size is not None and model.parameter_size.endswith("M")
    assert model.quantization == props["model_ftype"]
    assert status.latency_ms is not None and 0 <= status.latency_ms < 3000


async def test_configured_alias_names_the_model(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server), alias="tiny:latest")
    status = await backend.probe()
    assert [m.name for m in status.models] == ["tiny:latest"]
    assert [t["name"] for t in await backend.tags()] == ["tiny:latest"]


async def test_probe_counts_requests_in_flight(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server))
    stream = backend.generate({"prompt": "Count", "raw": True, "options": {**GREEDY, "num_predict": 400}})
    await anext(stream)  # generation is running in one slot now
    status = await backend.probe()
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()
    assert status.in_flight == 1
    assert status.slots == SLOTS


async def test_without_the_slots_endpoint_the_metrics_gauge_counts_requests(
    llama_servers: ServerGroup, tiny_gguf: Path
) -> None:
    """`--no-slots` turns /slots off (501); `--metrics` (as sollol starts llama-server) has the same count."""
    quiet = llama_servers.llama_server(tiny_gguf, context=CONTEXT, slots=SLOTS, extra=["--no-slots", "--metrics"])
    backend = LlamaServerBackend(ref_of(quiet))
    idle = await backend.probe()
    assert idle.ready and (idle.slots, idle.in_flight) == (SLOTS, 0), idle.error
    stream = backend.generate({"prompt": "Count", "raw": True, "options": {**GREEDY, "num_predict": 400}})
    await anext(stream)
    busy = await backend.probe()
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()
    assert busy.ready and busy.in_flight == 1, busy.error
    blind = LlamaServerBackend(ref_of(llama_servers.llama_server(tiny_gguf, context=CONTEXT, extra=["--no-slots"])))
    status = await blind.probe()
    assert status.ready and status.in_flight is None, status.error


async def test_streaming_generate_gives_the_same_greedy_tokens_as_llama_server(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server), alias="tiny")
    n = 24
    chunks = [
        c
        async for c in backend.generate(
            {"model": "tiny", "prompt": "Once upon a time", "raw": True, "options": {**GREEDY, "num_predict": n}}
        )
    ]
    expected = await direct(
        server, "/completion", {"prompt": "Once upon a time", "n_predict": n, "cache_prompt": False, **GREEDY}
    )
    assert len(chunks) > 2  # streamed piece by piece, not as one answer
    assert all(not c["done"] for c in chunks[:-1])
    assert "".join(c["response"] for c in chunks) == expected["content"]
    final = chunks[-1]
    assert final["done"] is True
    assert final["model"] == "tiny"
    assert final["done_reason"] == "length"
    assert final["eval_count"] == n == expected["tokens_predicted"]


async def test_final_metrics_are_present_and_consistent(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server))
    started = time.perf_counter_ns()
    final = await collect(
        backend.generate({"prompt": "The weather today", "raw": True, "options": {**GREEDY, "num_predict": 10}})
    )
    elapsed = time.perf_counter_ns() - started
    for key in ("total_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        assert isinstance(final[key], int) and final[key] > 0, key
    assert final["eval_count"] == 10
    assert final["prompt_eval_duration"] + final["eval_duration"] <= final["total_duration"] <= elapsed
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", final["created_at"])
    assert "load_duration" not in final  # zero values are omitted, as Ollama does


async def test_stop_word_ends_with_stop_reason(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server))
    probe = await collect(
        backend.generate({"prompt": "Once upon a time", "raw": True, "options": {**GREEDY, "num_predict": 12}})
    )
    text = probe["response"]
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    final = await collect(
        backend.generate(
            {"prompt": "Once upon a time", "raw": True, "options": {**GREEDY, "num_predict": 12, "stop": stop}}
        )
    )
    assert probe["done_reason"] == "length"
    assert final["done_reason"] == "stop"
    assert final["response"] == text[: text.index(stop)]


async def test_templated_generate_uses_the_models_chat_template(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server))
    body = {"prompt": "Hello", "system": "Be brief.", "options": {**GREEDY, "num_predict": 8}}
    got = await collect(backend.generate(body))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    prompt = (await direct(server, "/apply-template", {"messages": messages}))["prompt"]
    assert "Be brief." in prompt
    expected = await direct(server, "/completion", {"prompt": prompt, "n_predict": 8, "cache_prompt": False, **GREEDY})
    assert got["response"] == expected["content"]


async def test_chat_streams_ollama_chunks_like_llama_servers_own_chat(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server), alias="tiny")
    messages = [{"role": "user", "content": "Tell me a story"}]
    chunks = [
        c async for c in backend.chat({"model": "tiny", "messages": messages, "options": {**GREEDY, "num_predict": 16}})
    ]
    expected = await direct(
        server, "/v1/chat/completions", {"messages": messages, "max_tokens": 16, "cache_prompt": False, **GREEDY}
    )
    assert len(chunks) > 2
    for chunk in chunks[:-1]:
        assert chunk["done"] is False and chunk["message"]["role"] == "assistant"
    final = chunks[-1]
    text = "".join(c["message"]["content"] for c in chunks)
    assert text == expected["choices"][0]["message"]["content"]
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["eval_count"] == 16
    assert final["prompt_eval_count"] > 0 and final["eval_duration"] > 0 and final["total_duration"] > 0
    assert final["message"] == {"role": "assistant", "content": ""}


async def test_non_streaming_answers_are_the_aggregated_stream(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server))
    body = {"prompt": "Water is", "raw": True, "stream": False, "options": {**GREEDY, "num_predict": 12}}
    chunks = [c async for c in backend.generate(body)]
    whole = await collect(backend.generate(body))
    assert whole["response"] == "".join(c["response"] for c in chunks)
    assert whole["done"] is True and whole["eval_count"] == 12
    chat = await collect(
        backend.chat({"messages": [{"role": "user", "content": "Hi"}], "options": GREEDY | {"num_predict": 5}})
    )
    assert set(chat) >= {"model", "created_at", "message", "done", "done_reason", "eval_count"}
    assert chat["message"]["role"] == "assistant" and chat["message"]["content"]


async def test_embed_returns_unit_vectors_of_the_models_width(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server), alias="tiny")
    models = await direct_get(server, "/v1/models")
    width = models["data"][0]["meta"]["n_embd"]
    answer = await backend.embed({"model": "tiny", "input": ["first text", "second text"]})
    assert answer["model"] == "tiny"
    assert [len(v) for v in answer["embeddings"]] == [width, width]
    assert answer["embeddings"][0] != answer["embeddings"][1]
    for vector in answer["embeddings"]:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)
    assert answer["prompt_eval_count"] > 0 and answer["total_duration"] > 0
    single = await backend.embed({"model": "tiny", "input": "first text", "dimensions": 8})
    assert len(single["embeddings"][0]) == 8


async def test_show_tags_and_ps(server: ServerProcess, tiny_gguf: Path) -> None:
    backend = LlamaServerBackend(ref_of(server))
    name = Path(tiny_gguf).stem
    [tag] = await backend.tags()
    assert tag["name"] == name and tag["details"]["format"] == "gguf" and tag["size"] > 0
    [loaded] = await backend.ps()
    assert loaded["context_length"] == CONTEXT // SLOTS
    shown = await backend.show(f"{name}:latest")
    assert shown["capabilities"][0] == "completion"
    assert shown["model_info"]["general.parameter_count"] > 0
    assert shown["template"]  # the model's chat template
    assert await backend.show(f"library/{name}") == shown  # Ollama's name rules, as routing uses them
    with pytest.raises(UpstreamError) as caught:
        await backend.show("other-model")
    assert caught.value.status == 404 and caught.value.upstream_message == "model 'other-model' not found"


async def test_openai_pass_through(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server))
    body = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
    pieces = [piece async for piece in backend.openai_stream("/v1/chat/completions", body)]
    raw = b"".join(pieces)
    assert raw.startswith(b"data: ")
    assert raw.rstrip().endswith(b"data: [DONE]")
    answer = await backend.openai_json("/v1/chat/completions", {**body, "stream": False})
    assert answer["object"] == "chat.completion"
    models = await backend.openai_json("/v1/models")
    assert models["object"] == "list"


async def test_requests_right_after_a_stream_reuse_the_pool_safely(server: ServerProcess) -> None:
    """llama-server closes each connection after a streamed answer; the next request must not trip on it."""
    backend = LlamaServerBackend(ref_of(server))
    for _ in range(5):
        await collect(backend.chat({"messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 2}}))
        assert (await backend.probe()).ready
        assert len((await backend.embed({"input": "x"}))["embeddings"]) == 1


async def test_unknown_route_is_an_upstream_error(server: ServerProcess) -> None:
    backend = LlamaServerBackend(ref_of(server, "gpu1"))
    with pytest.raises(UpstreamError) as caught:
        await backend.openai_json("/v1/no-such-route", {})
    assert caught.value.status == 404
    assert str(caught.value).startswith(f"gpu1 (127.0.0.1:{server.port}): HTTP 404")


async def test_closed_port_is_unavailable() -> None:
    port = free_port()
    backend = LlamaServerBackend(BackendRef("gpu1", "llamacpp", "127.0.0.1", port), alias="tiny")
    with pytest.raises(BackendUnavailable, match=rf"^gpu1 \(127\.0\.0\.1:{port}\): connection refused$"):
        await anext(backend.generate({"prompt": "x", "raw": True}))
    status = await backend.probe()
    assert not status.reachable and status.error is not None and "connection refused" in status.error


async def test_server_killed_mid_stream_breaks_the_stream(llama_servers: ServerGroup, tiny_gguf: Path) -> None:
    victim = llama_servers.llama_server(tiny_gguf, context=CONTEXT)
    backend = LlamaServerBackend(ref_of(victim), Timeouts(connect=2, read=10))
    stream = backend.generate({"prompt": "Go", "raw": True, "options": {**GREEDY, "num_predict": 100000}})
    assert (await anext(stream))["done"] is False
    victim.process.kill()
    with pytest.raises(StreamBroken, match=r"^node2 \(127\.0\.0\.1:\d+\): "):
        async for _ in stream:
            pass
    await asyncio.to_thread(victim.process.wait, 10)
    status = await backend.probe()
    assert not status.reachable


async def test_prompt_beyond_the_context_is_refused_before_streaming(server: ServerProcess) -> None:
    """llama-server sends the first error as a plain error response, so it arrives as an UpstreamError (retryable
    decisions stay with the caller) and not as a broken stream."""
    backend = LlamaServerBackend(ref_of(server))
    long_prompt = " ".join(["word"] * (CONTEXT // SLOTS + 50))
    with pytest.raises(UpstreamError) as caught:
        await anext(backend.generate({"prompt": long_prompt, "raw": True, "options": {"num_predict": 4}}))
    assert caught.value.status == 400
    assert "exceeds the available context size" in caught.value.upstream_message
