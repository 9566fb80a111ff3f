"""OllamaBackend against the Ollama stand-in (tests/standin) over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import pytest

from sollol_cli.backends.base import (
    BackendRef,
    BackendUnavailable,
    StreamBroken,
    UpstreamError,
    collect,
)
from sollol_cli.backends.http import Timeouts, close_session
from sollol_cli.backends.ollama import OllamaBackend
from tests.harness.ollama import StandinFactory, StandinHandle, free_port

pytestmark = pytest.mark.real

MODELS = [
    {"name": "tiny:latest", "context_length": 2048, "parameter_size": "1.2M", "quantization_level": "Q4_0"},
    {"name": "other:7b", "family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q8_0"},
]


@pytest.fixture(autouse=True)
async def _shared_session() -> AsyncIterator[None]:
    yield
    await close_session()


def backend_of(standin: StandinHandle, timeouts: Timeouts | None = None) -> OllamaBackend:
    ref = BackendRef(name="gpu1", kind="ollama", host="127.0.0.1", port=standin.port, node="gpu1")
    return OllamaBackend(ref, timeouts)


async def direct(standin: StandinHandle, path: str, body: dict[str, Any]) -> Any:
    """The same request sent straight to the stand-in, for comparison."""
    async with aiohttp.ClientSession() as session, session.post(standin.url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    timing = {"created_at", "total_duration", "load_duration", "prompt_eval_duration", "eval_duration"}
    return {k: v for k, v in answer.items() if k not in timing}


async def test_probe_sees_version_models_and_what_is_loaded(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "a", "models": MODELS, "loaded": ["tiny:latest"], "version": "0.12.6"})
    status = await backend_of(standin).probe()
    assert status.reachable and status.ready, status.error
    assert status.version == "0.12.6"
    assert status.loaded == ["tiny:latest"]
    by_name = {m.name: m for m in status.models}
    assert set(by_name) == {"tiny:latest", "other:7b"}
    tiny, other = by_name["tiny:latest"], by_name["other:7b"]
    assert tiny.context_length == 2048  # known from /api/ps because it is loaded
    assert other.context_length is None
    assert (other.family, other.parameter_size, other.quantization) == ("qwen2", "7.6B", "Q8_0")
    assert tiny.digest is not None and len(tiny.digest) == 64 and tiny.size
    assert status.slots is None and status.in_flight is None  # Ollama does not publish them
    requests = standin.stats()["requests"]
    assert {"GET /api/version", "GET /api/tags", "GET /api/ps"} <= set(requests)


async def test_generate_forwards_chunks_while_the_model_is_still_generating(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "slow", "response_tokens": 12, "faults": {"hold_after_tokens": 1}})
    backend = backend_of(standin)
    stream = backend.generate({"model": "tiny", "prompt": "Why is the sky blue?", "stream": False})
    first = await anext(stream)
    assert first["response"].startswith("<slow>") and first["done"] is False
    stats = standin.stats()  # the other 11 tokens are held upstream until released
    assert (stats["active"], stats["held"], stats["completed"]) == (1, 1, 0)
    standin.release()
    rest = [chunk async for chunk in stream]
    assert rest[-1]["done"] is True and len(rest) == 12
    assert standin.stats()["recent"][-1]["status"] == "done"


async def test_streamed_and_aggregated_answers_equal_ollamas_own(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "b"})
    backend = backend_of(standin)
    body = {"model": "tiny", "prompt": "Hello", "options": {"seed": 3, "num_predict": 8}, "stream": False}
    chunks = [chunk async for chunk in backend.generate(body)]
    assert len(chunks) == 9 and all(not c["done"] for c in chunks[:-1])
    aggregated = await collect(backend.generate(body))
    expected = await direct(standin, "/api/generate", body)
    assert without_timing(aggregated) == without_timing(expected)
    assert aggregated["response"] == "".join(c["response"] for c in chunks)
    for key in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(aggregated[key], int) and aggregated[key] > 0

    chat_body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "options": {"seed": 1}}
    chat = await collect(backend.chat({**chat_body, "stream": False}))
    expected_chat = await direct(standin, "/api/chat", {**chat_body, "stream": False})
    assert without_timing(chat) == without_timing(expected_chat)
    assert chat["message"]["content"].startswith("<b>")


async def test_embed_show_tags_and_ps_pass_through(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "c", "models": MODELS})
    backend = backend_of(standin)
    body = {"model": "tiny", "input": ["one", "two"]}
    embedded = await backend.embed(body)
    assert without_timing(embedded) == without_timing(await direct(standin, "/api/embed", body))
    assert len(embedded["embeddings"]) == 2
    shown = await backend.show("other:7b")
    assert shown["details"]["family"] == "qwen2" and "model_info" in shown
    assert {m["name"] for m in await backend.tags()} == {"tiny:latest", "other:7b"}
    before = {m["name"] for m in await backend.ps()}
    await collect(backend.generate({"model": "other:7b", "prompt": "x"}))
    assert {m["name"] for m in await backend.ps()} - before == {"other:7b"}


async def test_pull_copy_and_delete(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "d", "pullable": [{"name": "fresh:1b"}]})
    backend = backend_of(standin)
    statuses = [chunk["status"] async for chunk in backend.pull({"model": "fresh:1b"})]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(s.startswith("pulling ") and s != "pulling manifest" for s in statuses)
    await backend.copy("fresh:1b", "copied:1b")
    assert {"fresh:1b", "copied:1b"} <= {m["name"] for m in await backend.tags()}
    await backend.delete("fresh:1b")
    assert "fresh:1b" not in {m["name"] for m in await backend.tags()}
    with pytest.raises(StreamBroken, match="file does not exist"):
        await collect(backend.pull({"model": "nowhere:1b"}))
    with pytest.raises(UpstreamError) as caught:
        await backend.delete("fresh:1b")
    assert caught.value.status == 404


async def test_unknown_model_is_ollamas_404(ollama_standin: StandinFactory) -> None:
    backend = backend_of(ollama_standin({"name": "e"}))
    with pytest.raises(UpstreamError) as caught:
        await anext(backend.chat({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
    assert caught.value.status == 404
    assert caught.value.upstream_message == "model 'nope' not found"
    assert str(caught.value).startswith(f"gpu1 (127.0.0.1:{backend.ref.port}): HTTP 404")


async def test_http_500_before_streaming_is_an_upstream_error(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "f"})
    standin.set_faults(http_500_next=1, message="CUDA error: out of memory")
    with pytest.raises(UpstreamError) as caught:
        await anext(backend_of(standin).generate({"model": "tiny", "prompt": "x"}))
    assert (caught.value.status, caught.value.upstream_message) == (500, "CUDA error: out of memory")


async def test_error_line_after_some_tokens_breaks_the_stream(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "g"})
    standin.set_faults(error_after_tokens=3, message="model runner crashed")
    got: list[dict[str, Any]] = []
    with pytest.raises(StreamBroken, match=r"^gpu1 \(127\.0\.0\.1:\d+\): model runner crashed$"):
        async for chunk in backend_of(standin).generate({"model": "tiny", "prompt": "x"}):
            got.append(chunk)
    assert len(got) == 3


async def test_dropped_connection_after_some_tokens_breaks_the_stream(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "h"})
    standin.set_faults(drop_after_tokens=2)
    got: list[dict[str, Any]] = []
    with pytest.raises(StreamBroken):
        async for chunk in backend_of(standin).chat({"model": "tiny", "messages": [{"role": "user", "content": "x"}]}):
            got.append(chunk)
    assert len(got) == 2


async def test_hung_backend_is_unavailable_after_the_read_timeout(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "i"})
    standin.set_faults(hang=True, routes=["/api/generate"])
    backend = backend_of(standin, Timeouts(connect=1, read=0.4, probe=1))
    with pytest.raises(BackendUnavailable, match="sent nothing for 0.4s"):
        await anext(backend.generate({"model": "tiny", "prompt": "x"}))


async def test_leaving_a_stream_early_cancels_the_generation(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "j", "tokens_per_second": 50, "response_tokens": 200})
    stream = backend_of(standin).generate({"model": "tiny", "prompt": "long"})
    await anext(stream)
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()
    # wait in a thread: the stats poll blocks, and the socket close needs this loop to run
    stats = await asyncio.to_thread(standin.wait_until, lambda s: s["cancelled"] == 1 and s["active"] == 0)
    assert stats["completed"] == 0


async def test_openai_pass_through(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "k"})
    backend = backend_of(standin)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    raw = b"".join([piece async for piece in backend.openai_stream("/v1/chat/completions", body)])
    assert raw.startswith(b"data: ") and raw.rstrip().endswith(b"data: [DONE]")
    answer = await backend.openai_json("/v1/chat/completions", {**body, "stream": False})
    assert answer["choices"][0]["message"]["content"].startswith("<k>")
    models = await backend.openai_json("/v1/models")
    assert [m["id"] for m in models["data"]] == ["tiny:latest"]


async def test_closed_port_is_unavailable() -> None:
    port = free_port()
    backend = OllamaBackend(BackendRef("gpu1", "ollama", "127.0.0.1", port))
    with pytest.raises(BackendUnavailable, match=rf"^gpu1 \(127\.0\.0\.1:{port}\): connection refused$"):
        await anext(backend.generate({"model": "tiny", "prompt": "x"}))
    status = await backend.probe()
    assert not status.reachable and status.error == f"gpu1 (127.0.0.1:{port}): connection refused"
