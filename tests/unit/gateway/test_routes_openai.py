"""The OpenAI-compatible routes through the gateway: pass-through, SSE streaming, OpenAI-shaped errors."""

from __future__ import annotations

import json

from tests.unit.gateway.conftest import MakeGateway, MakeStandin, answer

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


async def test_chat_completion_json(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=2)
    gw = await gateway(a)
    resp = await gw.post("/v1/chat/completions", CHAT)
    assert resp.status == 200
    assert resp.headers["X-Sollol-Backend"] == "a"
    data = await resp.json()
    assert data["choices"][0]["message"]["content"] == "".join(answer(a, "user: hi", 2))
    assert json.loads(gw.log[-1])["tokens"] == 2


async def test_chat_completion_sse_is_forwarded_byte_for_byte(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=3)
    gw = await gateway(a)
    resp = await gw.post("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["X-Accel-Buffering"] == "no"
    raw = await resp.read()
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]]
    assert contents == [*answer(a, "user: hi", 3), ""]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3  # the usage chunk too
    assert a.stats()["bodies"][-1]["stream_options"] == {"include_usage": True}  # passed through unchanged
    assert json.loads(gw.log[-1])["tokens"] == 3


async def test_models_and_one_model(gateway: MakeGateway, standin: MakeStandin) -> None:
    modified = "2026-01-02T03:04:05.123456789Z"
    models = [{"name": "tiny", "modified_at": modified}, {"name": "ns/other:7b", "modified_at": modified}]
    gw = await gateway(standin("a", models=models))
    data = await (await gw.get("/v1/models")).json()
    assert data["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in data["data"]] == [("ns/other:7b", "ns"), ("tiny:latest", "library")]
    assert data["data"][1]["created"] == 1767323045
    resp = await gw.get("/v1/models/ns/other:7b")
    assert (await resp.json())["id"] == "ns/other:7b"
    resp = await gw.get("/v1/models/nope")
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"


async def test_embeddings(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    data = await (await gw.post("/v1/embeddings", {"model": "tiny", "input": ["a", "b"]})).json()
    assert [d["index"] for d in data["data"]] == [0, 1]


async def test_errors_have_the_openai_shape(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    resp = await gw.post("/v1/chat/completions", {"model": "nope", "messages": []})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert error["type"] == "not_found_error" and "nope" in error["message"]
    assert error["param"] is None and error["code"] is None
    resp = await gw.post("/v1/chat/completions", {"messages": []})
    assert resp.status == 400
    assert (await resp.json())["error"] == {
        "message": "model is required",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    resp = await gw.post("/v1/unknown", {})
    assert resp.status == 404
    assert "message" in (await resp.json())["error"]
