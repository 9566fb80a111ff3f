"""The Ollama stand-in against the official `ollama` and `openai` clients, raw HTTP where the wire matters
(NDJSON framing, status codes, headers), and its `ollama` executable. Subprocess tests are marked real;
all are marked standin, so they run in the README's test command (`-m "not vulkan"`) but not in a
plain `pytest` (select them alone with `-m standin`)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx
import ollama
import openai
import pytest

from tests.harness.ollama import StandinFactory, SubprocessStandin, write_standin_script
from tests.standin.ollama_standin import ModelSpec, StandinConfig, parse_rfc3339, standin_script

# Self-tests of the stand-in: outside the default unit run, in the README's full test command.
pytestmark = pytest.mark.standin

FAST: dict[str, Any] = {"tokens_per_second": 2000}


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


# ----------------------------------------------------------------------------------------------- basics


def test_root_and_version_answer_like_ollama(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"version": "0.9.1"})
    root = httpx.get(standin.url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert root.headers["content-type"].startswith("text/plain")
    assert httpx.head(standin.url + "/").status_code == 200
    assert httpx.get(standin.url + "/api/version").json() == {"version": "0.9.1"}
    assert httpx.get(standin.url + "/api/nothing").status_code == 404


def test_generate_without_streaming_names_the_instance_and_reports_metrics(
    ollama_standin: StandinFactory,
) -> None:
    standin = ollama_standin({"name": "alpha", **FAST})
    reply = ollama.Client(host=standin.url).generate(model="tiny", prompt="why is the sky blue?", stream=False)
    assert reply.response is not None and reply.response.startswith("<alpha> ")
    assert (reply.done, reply.done_reason, reply.eval_count) == (True, "stop", 16)
    assert reply.model == "tiny"  # Ollama echoes the name as the client sent it
    for duration in (reply.total_duration, reply.load_duration, reply.prompt_eval_duration, reply.eval_duration):
        assert isinstance(duration, int) and duration > 0
    assert reply.context and all(isinstance(t, int) for t in reply.context)
    assert reply.created_at is not None and reply.created_at.endswith("Z")
    parse_rfc3339(reply.created_at)


def test_generate_streams_ndjson_when_stream_is_missing(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin(FAST)
    streamed = httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "hello"})
    assert streamed.status_code == 200
    assert streamed.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(streamed)
    assert len(lines) == 17
    assert all(
        line["done"] is False and set(line) == {"model", "created_at", "response", "done"} for line in lines[:-1]
    )
    final = lines[-1]
    assert final["done"] is True and final["response"] == "" and final["done_reason"] == "stop"
    assert {"context", "total_duration", "eval_count", "eval_duration"} <= set(final)
    single = httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "hello", "stream": False})
    assert single.headers["content-type"].startswith("application/json")
    assert "".join(line["response"] for line in lines[:-1]) == single.json()["response"]


def test_num_predict_gives_length_and_stop_cuts_the_answer(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin(FAST).url)
    short = client.generate(model="tiny", prompt="count", options={"num_predict": 4})
    assert (short.eval_count, short.done_reason) == (4, "length")
    full = client.generate(model="tiny", prompt="count").response
    assert full is not None
    word = full.split()[3]
    cut = client.generate(model="tiny", prompt="count", options={"stop": [word]})
    assert cut.done_reason == "stop"
    assert cut.response == full[: full.index(word)]


def test_format_json_answers_a_json_object(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin({"name": "js", **FAST}).url)
    answer = client.generate(model="tiny", prompt="describe", format="json").response
    assert answer is not None
    parsed = json.loads(answer)
    assert parsed["instance"] == "js" and len(parsed["words"]) == 15
    schema = {"type": "object", "properties": {"instance": {"type": "string"}}}
    chat = client.chat(model="tiny", messages=[{"role": "user", "content": "x"}], format=schema)
    assert json.loads(chat.message.content or "")["instance"] == "js"


def test_answers_are_deterministic_and_tell_instances_apart(ollama_standin: StandinFactory) -> None:
    one = ollama.Client(host=ollama_standin({"name": "node1", **FAST}).url)
    two = ollama.Client(host=ollama_standin({"name": "node2", **FAST}).url)

    def answer(client: ollama.Client, prompt: str, seed: int = 0) -> str:
        return client.generate(model="tiny", prompt=prompt, options={"seed": seed}).response or ""

    assert answer(one, "a") == answer(one, "a")
    assert answer(one, "a") != answer(one, "b")
    assert answer(one, "a") != answer(one, "a", seed=7)
    assert answer(one, "a").startswith("<node1>") and answer(two, "a").startswith("<node2>")
    assert answer(one, "a").split(" ", 1)[1] == answer(two, "a").split(" ", 1)[1]


def test_chat_with_the_sync_client(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin({"name": "chatty", **FAST}).url)
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat(model="tiny", messages=messages, stream=False)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.message.content.startswith("<chatty>")
    assert (reply.done_reason, reply.eval_count) == ("stop", 16)
    parts = list(client.chat(model="tiny", messages=messages, stream=True))
    assert [p.done for p in parts] == [False] * 16 + [True]
    assert "".join(p.message.content or "" for p in parts) == reply.message.content
    assert parts[-1].done_reason == "stop" and parts[-1].message.content == ""


async def test_async_client_streams_chat_and_generate(ollama_standin: StandinFactory) -> None:
    client = ollama.AsyncClient(host=ollama_standin({"name": "asy", **FAST}).url)
    chunks = [
        c async for c in await client.chat(model="tiny", messages=[{"role": "user", "content": "x"}], stream=True)
    ]
    assert chunks[0].message.content == "<asy>" and chunks[-1].done
    pieces = [p async for p in await client.generate(model="tiny", prompt="x", stream=True, options={"num_predict": 3})]
    assert len(pieces) == 4 and pieces[-1].done_reason == "length"
    whole = await client.generate(model="tiny", prompt="x", options={"num_predict": 3})
    assert whole.response == "".join(p.response or "" for p in pieces)


def test_empty_prompt_loads_and_keep_alive_zero_unloads(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin(FAST).url)
    assert client.ps().models == []
    loaded = client.generate(model="tiny")
    assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
    assert [m.model for m in client.ps().models] == ["tiny:latest"]
    unloaded = client.generate(model="tiny", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert client.ps().models == []
    chat_loaded = client.chat(model="tiny", messages=[])
    assert chat_loaded.done_reason == "load" and chat_loaded.message.content == ""


def test_list_ps_and_show(ollama_standin: StandinFactory) -> None:
    spec = {
        "name": "qwen:0.5b",
        "family": "qwen2",
        "parameter_size": "494M",
        "context_length": 32768,
        "size": 397_000_000,
    }
    standin = ollama_standin({"models": [spec, "tiny"], "loaded": ["qwen:0.5b"], "num_ctx": 2048})
    client = ollama.Client(host=standin.url)
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"qwen:0.5b", "tiny:latest"}
    qwen = listed["qwen:0.5b"]
    assert qwen.size == 397_000_000 and qwen.digest and len(qwen.digest) == 64
    assert qwen.details is not None and (qwen.details.family, qwen.details.parameter_size) == ("qwen2", "494M")
    assert qwen.modified_at is not None
    running = client.ps().models
    assert [(m.model, m.context_length, m.size_vram) for m in running] == [("qwen:0.5b", 2048, 0)]
    shown = client.show("qwen:0.5b")
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "qwen2"
    assert shown.modelinfo["qwen2.context_length"] == 32768
    assert shown.capabilities == ["completion", "embedding"]
    raw = httpx.get(standin.url + "/api/tags").json()["models"][0]
    assert raw["name"] == raw["model"] and set(raw["details"]) >= {"format", "families", "quantization_level"}


def test_embed_and_embeddings_are_deterministic_unit_vectors(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin({"models": [{"name": "emb", "embedding_length": 24}]}).url)
    reply = client.embed(model="emb", input=["why is the sky blue?", "why is grass green?"])
    assert len(reply.embeddings) == 2 and all(len(v) == 24 for v in reply.embeddings)
    assert reply.embeddings[0] != reply.embeddings[1]
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-5 for v in reply.embeddings)
    assert (reply.prompt_eval_count or 0) > 0 and (reply.total_duration or 0) > 0
    again = client.embed(model="emb", input="why is the sky blue?")
    assert again.embeddings[0] == reply.embeddings[0]
    legacy = client.embeddings(model="emb", prompt="why is the sky blue?")
    assert list(legacy.embedding) == list(reply.embeddings[0])
    assert len(client.embed(model="emb", input="x", dimensions=8).embeddings[0]) == 8


def test_pull_streams_progress_and_adds_the_model(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"pullable": [{"name": "llama3.2:1b", "size": 1_300_000_000}]})
    client = ollama.Client(host=standin.url)
    statuses = list(client.pull("llama3.2:1b", stream=True))
    assert statuses[0].status == "pulling manifest"
    assert [s.status for s in statuses[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    downloads = [s for s in statuses if s.digest]
    assert downloads and all(s.status == f"pulling {s.digest[7:19]}" for s in downloads if s.digest)
    weights = [s for s in downloads if s.total and s.total > 1_000_000]
    assert weights[0].completed is None and weights[-1].completed == weights[-1].total
    assert "llama3.2:1b" in {m.model for m in client.list().models}
    assert client.pull("llama3.2:1b").status == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        list(client.pull("nosuch:model", stream=True))
    assert missing.value.error == "pull model manifest: file does not exist"
    streamed = httpx.post(standin.url + "/api/pull", json={"model": "nosuch"})
    assert streamed.status_code == 200 and ndjson(streamed)[-1] == {"error": "pull model manifest: file does not exist"}
    single = httpx.post(standin.url + "/api/pull", json={"model": "nosuch", "stream": False})
    assert single.status_code == 500


def test_copy_and_delete(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin().url)
    assert client.copy("tiny", "tiny-backup").status == "success"
    names = {m.model: m.digest for m in client.list().models}
    assert names["tiny-backup:latest"] == names["tiny:latest"]
    assert client.delete("tiny").status == "success"
    assert {m.model for m in client.list().models} == {"tiny-backup:latest"}
    with pytest.raises(ollama.ResponseError) as gone:
        client.delete("tiny")
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as no_source:
        client.copy("tiny", "again")
    assert (no_source.value.status_code, no_source.value.error) == (404, 'model "tiny" not found')


# ----------------------------------------------------------------------------------------------- errors


def test_unknown_model_is_a_404_response_error(ollama_standin: StandinFactory) -> None:
    client = ollama.Client(host=ollama_standin().url)
    for call in (
        lambda: client.generate(model="ghost", prompt="x"),
        lambda: client.chat(model="ghost", messages=[{"role": "user", "content": "x"}]),
        lambda: list(client.chat(model="ghost", messages=[{"role": "user", "content": "x"}], stream=True)),
        lambda: client.show("ghost"),
        lambda: client.embed(model="ghost", input="x"),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert (err.value.status_code, err.value.error) == (404, "model 'ghost' not found")


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", b"", 400, "missing request body"),
        ("/api/chat", b"", 400, "missing request body"),
        ("/api/generate", b"{nope", 400, "invalid character 'n' looking for beginning of value"),
        ("/api/generate", b"[1]", 400, "json: cannot unmarshal array into Go value of type api.GenerateRequest"),
        ("/api/chat", b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model is required"),
        ("/api/show", b"{}", 400, "model is required"),
        ("/api/embeddings", b'{"prompt": "x"}', 400, "model is required"),
        ("/api/generate", b'{"prompt": "x"}', 404, "model '' not found"),
        ("/api/generate", b'{"model": "tiny", "prompt": "x", "think": true}', 400, '"tiny" does not support thinking'),
        (
            "/api/generate",
            b'{"model": "tiny", "prompt": "x", "keep_alive": "soon"}',
            400,
            'time: invalid duration "soon"',
        ),
        ("/api/embed", b'{"model": "tiny", "input": 3}', 400, "invalid input type"),
    ],
)
def test_error_bodies_and_status_codes(
    ollama_standin: StandinFactory, path: str, body: bytes, status: int, error: str
) -> None:
    reply = httpx.post(ollama_standin().url + path, content=body)
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {"error": error}


# ----------------------------------------------------------------------------------------------- slots


@pytest.mark.parametrize("slots", [1, 3])
async def test_requests_beyond_the_slots_wait_in_a_queue(ollama_standin: StandinFactory, slots: int) -> None:
    standin = ollama_standin({"num_parallel": slots, "faults": {"hold_after_tokens": 1}, **FAST})
    client = ollama.AsyncClient(host=standin.url)
    requests = asyncio.gather(*(client.generate(model="tiny", prompt=f"p{i}") for i in range(6)))
    for done in range(0, 6, slots):  # each batch holds its slots; the rest really wait in the queue
        batch = min(slots, 6 - done)
        stats = await asyncio.to_thread(standin.wait_until, lambda s, b=batch: s["held"] == b)  # type: ignore[misc]
        assert (stats["active"], stats["queued"], stats["completed"]) == (batch, 6 - done - batch, done)
        standin.release()
    replies = await requests
    assert all(r.eval_count == 16 for r in replies)
    stats = standin.stats()
    assert stats["max_concurrency"] == slots  # reached, never exceeded
    assert stats["max_in_flight"] == 6  # all of them at once, running or queued
    assert (stats["completed"], stats["active"], stats["queued"]) == (6, 0, 0)
    assert stats["requests"]["POST /api/generate"] == 6


async def test_a_full_queue_answers_503(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"num_parallel": 1, "max_queue": 1, "faults": {"hold_after_tokens": 1}, **FAST})
    client = ollama.AsyncClient(host=standin.url)
    running = asyncio.ensure_future(client.generate(model="tiny", prompt="a"))
    queued = asyncio.ensure_future(client.generate(model="tiny", prompt="b"))
    await asyncio.to_thread(standin.wait_until, lambda s: s["held"] == 1 and s["queued"] == 1)
    with pytest.raises(ollama.ResponseError) as busy:
        await client.generate(model="tiny", prompt="c")
    assert busy.value.status_code == 503
    assert busy.value.error == "server busy, please try again.  maximum pending requests exceeded"
    for _ in range(2):  # the running one, then the one that waited
        await asyncio.to_thread(standin.wait_until, lambda s: s["held"] == 1)
        standin.release()
    assert [r.eval_count for r in await asyncio.gather(running, queued)] == [16, 16]


async def test_each_model_has_its_own_slots(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"models": ["a", "b"], "num_parallel": 1, "faults": {"hold_after_tokens": 1}, **FAST})
    client = ollama.AsyncClient(host=standin.url)
    requests = asyncio.gather(*(client.generate(model=m, prompt="x") for m in ("a", "b", "a", "b")))
    for _ in range(2):  # one per model at a time, each model's second one waiting for its slot
        stats = await asyncio.to_thread(standin.wait_until, lambda s: s["held"] == 2)
        assert stats["active_by_model"] == {"a:latest": 1, "b:latest": 1}
        standin.release()
    await requests
    stats = standin.stats()
    assert stats["max_concurrency_by_model"] == {"a:latest": 1, "b:latest": 1}
    assert stats["max_concurrency"] == 2


async def test_client_disconnect_cancels_the_generation_and_frees_the_slot(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"num_parallel": 1, "faults": {"hold_after_tokens": 1}, **FAST})
    async with aiohttp.ClientSession() as session:
        response = await session.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "long"})
        first = json.loads(await response.content.readline())
        assert first["response"].startswith("<standin-1>")
        queued = asyncio.ensure_future(
            session.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "q"})
        )
        await asyncio.to_thread(standin.wait_until, lambda s: s["queued"] == 1)
        queued.cancel()  # the waiting client gives up too
        with pytest.raises(asyncio.CancelledError):
            await queued
        response.close()
        stats = await asyncio.to_thread(standin.wait_until, lambda s: s["cancelled"] == 2 and s["active"] == 0)
        assert stats["queued"] == 0 and stats["completed"] == 0
        dropped = [r for r in stats["recent"] if r["prompt"] == "long"][0]
        assert dropped["status"] == "cancelled" and dropped["eval_count"] == 1  # stopped where it was held
        standin.reset_stats()
        standin.clear_faults()
        standin_fast = {"model": "tiny", "prompt": "next", "stream": False, "options": {"num_predict": 2}}
        async with session.post(standin.url + "/api/generate", json=standin_fast) as after:
            assert (await after.json())["eval_count"] == 2  # the slot was freed


# ----------------------------------------------------------------------------------------------- faults


def test_http_500_on_the_next_requests(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"faults": {"http_500_next": 1, "message": "boom"}, **FAST})
    client = ollama.Client(host=standin.url)
    with pytest.raises(ollama.ResponseError) as first:
        client.generate(model="tiny", prompt="x")
    assert (first.value.status_code, first.value.error) == (500, "boom")
    assert client.generate(model="tiny", prompt="x").done
    standin.set_faults(http_500_next=2)
    for _ in range(2):
        with pytest.raises(ollama.ResponseError):
            client.list()
    assert client.list().models
    assert standin.stats()["faults_fired"]["http_500"] == 3


def test_any_http_error_on_the_next_requests_in_each_apis_shape(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin(FAST)
    standin.set_faults(http_error_next=2, http_error_status=503, message="Loading model", routes=["/api/chat", "/v1/"])
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": False}
    native = httpx.post(standin.url + "/api/chat", json=chat)
    assert (native.status_code, native.json()) == (503, {"error": "Loading model"})
    openai_route = httpx.post(standin.url + "/v1/chat/completions", json=chat)
    assert openai_route.status_code == 503
    assert openai_route.json()["error"] == {
        "message": "Loading model",
        "type": "api_error",
        "param": None,
        "code": None,
    }
    assert httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "x"}).status_code == 200
    assert httpx.post(standin.url + "/api/chat", json=chat).json()["done"]  # both were used up
    stats = standin.stats()
    assert stats["faults_fired"] == {"http_error": 2} and stats["requests"]["POST /api/chat"] == 2
    standin.set_faults(http_error_next=1, http_error_status=404, message="model 'tiny' not found")
    with pytest.raises(anthropic.NotFoundError) as missing:  # /v1/messages answers in Anthropic's shape
        anthropic.Anthropic(base_url=standin.url, api_key="unused", max_retries=0).messages.create(
            model="tiny", max_tokens=2, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"] == {"type": "not_found_error", "message": "model 'tiny' not found"}  # type: ignore[index]
    assert standin.set_faults()["http_error_next"] == 0


def test_error_line_after_k_tokens_keeps_status_200(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin(FAST)
    standin.set_faults(error_after_tokens=3, message="runner crashed")
    raw = httpx.post(standin.url + "/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    assert raw.status_code == 200
    lines = ndjson(raw)
    assert len(lines) == 4 and lines[-1] == {"error": "runner crashed"}
    seen = []
    with pytest.raises(ollama.ResponseError, match="runner crashed"):
        for part in ollama.Client(host=standin.url).generate(model="tiny", prompt="x", stream=True):
            seen.append(part)
    assert len(seen) == 3
    single = httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False})
    assert (single.status_code, single.json()) == (500, {"error": "runner crashed"})
    standin.set_faults(error_after_tokens=0)
    before_any_token = httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "x"})
    assert (before_any_token.status_code, before_any_token.json()) == (500, {"error": "runner crashed"})


async def test_dropped_connection_after_k_tokens(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin(FAST)
    standin.set_faults(drop_after_tokens=2)
    body = {"model": "tiny", "prompt": "x"}
    async with aiohttp.ClientSession() as session, session.post(standin.url + "/api/generate", json=body) as response:
        assert response.status == 200
        lines = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async for line in response.content:
                lines.append(json.loads(line))
    assert len(lines) == 2 and not lines[-1]["done"]
    with pytest.raises(httpx.RemoteProtocolError):
        ollama.Client(host=standin.url).generate(model="tiny", prompt="x", stream=False)
    standin.clear_faults()
    assert ollama.Client(host=standin.url).generate(model="tiny", prompt="x").done


def test_slow_start_delays_the_first_byte(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"faults": {"slow_start": 1.0}, **FAST})
    with pytest.raises(httpx.ReadTimeout):  # nothing can arrive before the delay is over
        httpx.get(standin.url + "/api/version", timeout=0.2)
    assert httpx.get(standin.url + "/api/version", timeout=10).status_code == 200  # it does answer, late
    assert standin.stats()["faults_fired"]["slow_start"] == 2
    standin.clear_faults()
    assert httpx.get(standin.url + "/api/version").status_code == 200
    assert standin.stats()["faults_fired"]["slow_start"] == 2


def test_hold_pauses_streams_until_released(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"num_parallel": 2, **FAST})
    standin.set_faults(hold_after_tokens=2, routes=["/api/generate"])
    body = {"model": "tiny", "prompt": "x", "options": {"num_predict": 4}}
    with httpx.stream("POST", standin.url + "/api/generate", json=body) as response:
        lines = response.iter_lines()
        first = [json.loads(next(lines)) for _ in range(2)]
        assert [part["done"] for part in first] == [False, False]
        stats = standin.wait_until(lambda s: s["held"] == 1)
        assert (stats["completed"], stats["faults_fired"]) == (0, {"hold_after_tokens": 1})
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": False}
        assert httpx.post(standin.url + "/api/chat", json=chat).json()["done"]  # other routes go on
        standin.release()
        rest = [json.loads(line) for line in lines if line]
    assert [part["done"] for part in rest] == [False, False, True]
    stats = standin.stats()
    assert (stats["held"], stats["released"], stats["completed"]) == (0, 1, 2)
    assert stats["bodies"] == [body, chat]  # the requests as sent, for tests that check what arrived


def test_hang_never_answers_until_cleared(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin(FAST)
    standin.set_faults(hang=True, routes=["/api/chat"])
    client = ollama.Client(host=standin.url, timeout=0.5)
    with pytest.raises(httpx.ReadTimeout):
        client.chat(model="tiny", messages=[{"role": "user", "content": "x"}])
    assert client.generate(model="tiny", prompt="x").done  # other routes are unaffected
    standin.wait_until(lambda s: s["faults_fired"].get("hang") == 1)
    standin.clear_faults()
    assert client.chat(model="tiny", messages=[{"role": "user", "content": "x"}]).done


def test_an_older_ollama_lacks_its_missing_routes(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"missing_routes": ["/v1/responses", "/v1/messages"], **FAST})
    for path in ("/v1/responses", "/v1/messages"):
        reply = httpx.post(standin.url + path, json={"model": "tiny", "input": "x", "max_tokens": 2})
        assert (reply.status_code, reply.text) == (404, "404 page not found")  # Gin's answer, not JSON
        assert reply.headers["content-type"].startswith("text/plain")
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    assert httpx.post(standin.url + "/v1/chat/completions", json=chat).status_code == 200
    assert standin.stats()["requests"]["POST /v1/messages"] == 1  # asked, and refused


def test_tokens_per_chunk_streams_several_tokens_at_once(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"tokens_per_chunk": 3, "response_tokens": 7, **FAST})
    lines = ndjson(httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "x"}))
    whole = httpx.post(standin.url + "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False}).json()
    pieces = [line["response"] for line in lines[:-1]]
    assert len(pieces) == 3 and "".join(pieces) == whole["response"]  # 3 + 3 + 1 tokens
    assert lines[-1]["eval_count"] == whole["eval_count"] == 7  # tokens, not chunks
    standin.set_faults(hold_after_tokens=4, routes=["/api/generate"])
    with httpx.stream("POST", standin.url + "/api/generate", json={"model": "tiny", "prompt": "x"}) as response:
        stream = response.iter_lines()
        first = [json.loads(next(stream))["response"] for _ in range(2)]
        standin.wait_until(lambda s: s["held"] == 1)
        assert "".join(first) == "".join(pieces)[: len("".join(first))]
        assert len("".join(first).split()) == 4  # the 4 tokens before the hold went out: 3, then 1
        standin.release()
        rest = [json.loads(line) for line in stream if line]
    assert "".join(first + [line["response"] for line in rest]) == whole["response"]


def test_faults_endpoint_refuses_unknown_fields(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin()
    reply = httpx.post(standin.url + "/_standin/faults", json={"explode": True})
    assert reply.status_code == 400 and "explode" in reply.json()["error"]


# ----------------------------------------------------------------------------------------------- OpenAI


def test_openai_client_against_v1_routes(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"name": "oai", "models": ["tiny", {"name": "emb", "embedding_length": 12}], **FAST})
    client = openai.OpenAI(base_url=standin.url + "/v1", api_key="ollama")
    messages: Any = [{"role": "user", "content": "hello"}]
    completion = client.chat.completions.create(model="tiny", messages=messages)
    text = completion.choices[0].message.content
    assert text is not None and text.startswith("<oai>")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 16
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices[0].finish_reason == "stop"
    limited = client.chat.completions.create(model="tiny", messages=messages, max_tokens=3)
    assert limited.choices[0].finish_reason == "length"
    assert {m.id for m in client.models.list()} == {"tiny:latest", "emb:latest"}
    assert client.models.retrieve("tiny:latest").owned_by == "library"
    embedded = client.embeddings.create(model="emb", input=["a", "b"])
    native = ollama.Client(host=standin.url).embed(model="emb", input=["a", "b"]).embeddings
    assert [list(e.embedding) for e in embedded.data] == [list(v) for v in native]
    legacy = client.completions.create(model="tiny", prompt="once upon", max_tokens=5)
    assert legacy.choices[0].text.startswith("<oai>") and legacy.choices[0].finish_reason == "length"


def test_openai_errors_and_sse_framing(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin(FAST)
    client = openai.OpenAI(base_url=standin.url + "/v1", api_key="ollama", max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body == {
        "message": "model 'ghost' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}
    raw = httpx.post(standin.url + "/v1/chat/completions", json=body)
    assert raw.headers["content-type"] == "text/event-stream"
    events = [e for e in raw.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    standin.set_faults(error_after_tokens=2, message="gpu fell off")
    with pytest.raises(openai.APIError, match="gpu fell off"):
        list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], stream=True))
    empty = httpx.post(standin.url + "/v1/chat/completions", json={"model": "tiny", "messages": []})
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"


def test_openai_embeddings_base64_round_trip(ollama_standin: StandinFactory) -> None:
    standin = ollama_standin({"models": [{"name": "emb", "embedding_length": 6}]})
    reply = httpx.post(
        standin.url + "/v1/embeddings", json={"model": "emb", "input": "hi", "encoding_format": "base64"}
    ).json()
    floats = list(struct.unpack("<6f", base64.b64decode(reply["data"][0]["embedding"])))
    assert floats == ollama.Client(host=standin.url).embed(model="emb", input="hi").embeddings[0]


# ----------------------------------------------------------------------------------------------- executable


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    config = StandinConfig(name="n", models=[ModelSpec(name="m", size=5)], num_parallel=3)
    config.dump(tmp_path / "c.json")
    assert StandinConfig.load(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="unknown config keys"):
        StandinConfig.from_dict({"nmae": "typo"})


@pytest.mark.real
def test_standin_script_is_one_self_contained_executable(tmp_path: Path) -> None:
    script = write_standin_script(tmp_path)  # alone in its directory: nothing to import from
    assert script.read_text().splitlines()[0] == f"#!{sys.executable}"
    assert standin_script("/opt/py/bin/python3").splitlines()[0] == "#!/opt/py/bin/python3"
    env = {**os.environ, "OLLAMA_HOST": "127.0.0.1:9"}  # nothing listens on the discard port
    version = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True, check=True)
    assert version.stdout.splitlines() == [
        "Warning: could not connect to a running Ollama instance",
        "Warning: client version is 0.12.6",
    ]
    listed = subprocess.run([str(script), "list"], env=env, capture_output=True, text=True, check=False)
    assert listed.returncode == 1 and "could not connect to ollama server" in listed.stderr


@pytest.mark.real
def test_ollama_serve_binds_ollama_host_and_the_cli_talks_to_it(ollama_standin: StandinFactory) -> None:
    config = {"version": "0.9.1", "models": [{"name": "qwen2.5:0.5b", "size": 397_821_319}, "tiny"]}
    standin = ollama_standin(config, subprocess=True, env={"OLLAMA_NUM_PARALLEL": "2"})
    assert isinstance(standin, SubprocessStandin)
    assert standin.stats()["num_parallel"] == 2
    answer = ollama.Client(host=standin.host).generate(model="tiny", prompt="x").response
    assert answer is not None and answer.startswith("<standin-1>")
    version = standin.run_cli("--version")
    assert version.stdout == "ollama version is 0.9.1\n"
    listed = standin.run_cli("list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    by_name = {row.split()[0]: row for row in rows}
    assert set(by_name) == {"qwen2.5:0.5b", "tiny:latest"}
    assert "397 MB" in by_name["qwen2.5:0.5b"] and "ago" in by_name["qwen2.5:0.5b"]
    assert header.index("ID") == by_name["tiny:latest"].index(by_name["tiny:latest"].split()[1])
    assert standin.run_cli("list", "qw").stdout.count("\n") == 2
    standin.process.send_signal(signal.SIGTERM)
    assert standin.process.wait(timeout=10) == 0


@pytest.mark.real
def test_pulled_models_persist_in_ollama_models(ollama_standin: StandinFactory, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    config = {"pullable": [{"name": "smol:1b"}]}
    first = ollama_standin(config, subprocess=True, env={"OLLAMA_MODELS": str(models_dir)})
    assert ollama.Client(host=first.url).pull("smol:1b").status == "success"
    first.stop()
    assert (models_dir / "standin-state.json").is_file()
    second = ollama_standin(config, subprocess=True, env={"OLLAMA_MODELS": str(models_dir)})
    assert "smol:1b" in {m.model for m in ollama.Client(host=second.url).list().models}
