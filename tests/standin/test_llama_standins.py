"""The llama-server stand-in (tests/standin/llama_standins.py) run in this process with `serving_llama`: the
routes sollol's llama-server client uses, answered in llama-server's own shapes. Marked standin, like the
Ollama stand-in's self-tests (select them with `-m standin`)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.standin.llama_standins import DEFAULT_PREDICT, NO_EMBEDDINGS, chat_answer, serving_llama

pytestmark = pytest.mark.standin

MESSAGES = [{"role": "user", "content": "hi"}]


async def post(port: int, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(f"http://127.0.0.1:{port}{path}", json=body) as resp:
        return resp.status, await resp.read()


async def test_streamed_chat_comes_as_llama_server_sends_it() -> None:
    async with serving_llama(["-m", "/models/tiny.gguf"]) as port:
        body = {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
        status, raw = await post(port, "/v1/chat/completions", body)
        _, templated = await post(port, "/apply-template", {"messages": MESSAGES})
        _, completion = await post(port, "/completion", {"prompt": json.loads(templated)["prompt"]})
    assert status == 200
    frames = raw.decode().split("\n\n")
    assert frames[-2:] == ["data: [DONE]", ""]
    events = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-2]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:-2]]
    assert len(pieces) == DEFAULT_PREDICT
    assert "".join(pieces) == chat_answer("tiny", MESSAGES) == json.loads(completion)["content"]
    assert pieces[0] == "<tiny>"  # the alias (the model file's stem) names the answer
    assert [e["choices"][0]["finish_reason"] for e in events[-2:-1]] == ["stop"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == DEFAULT_PREDICT
    assert events[-1]["timings"]["predicted_n"] == DEFAULT_PREDICT
    assert {e["object"] for e in events} == {"chat.completion.chunk"}


async def test_chat_without_usage_or_stream() -> None:
    async with serving_llama(["-m", "/models/tiny.gguf", "--alias", "small"]) as port:
        _, raw = await post(port, "/v1/chat/completions", {"messages": MESSAGES, "stream": True, "max_tokens": 3})
        status, whole = await post(port, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3})
    events = [json.loads(frame.removeprefix("data: ")) for frame in raw.decode().split("\n\n")[:-2]]
    assert events[-1]["choices"][0]["finish_reason"] == "length" and events[-1]["timings"]["predicted_n"] == 3
    assert "usage" not in events[-1]
    answer = json.loads(whole)
    assert status == 200 and answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == chat_answer("small", MESSAGES, 3)
    assert answer["choices"][0]["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 3


async def test_embeddings_only_when_started_with_embeddings() -> None:
    async with serving_llama(["-m", "/models/tiny.gguf"]) as port:
        status, raw = await post(port, "/v1/embeddings", {"input": "x"})
    assert (status, json.loads(raw)) == (501, NO_EMBEDDINGS)
    async with serving_llama(["-m", "/models/tiny.gguf", "--embeddings", "--pooling", "last"]) as port:
        status, raw = await post(port, "/v1/embeddings", {"input": ["x", "y"], "encoding_format": "float"})
        _, again = await post(port, "/v1/embeddings", {"input": "x"})
    data = json.loads(raw)["data"]
    assert status == 200 and [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 32
    assert data[0]["embedding"] != data[1]["embedding"]
    assert json.loads(again)["data"][0]["embedding"] == data[0]["embedding"]  # derived from model and input
