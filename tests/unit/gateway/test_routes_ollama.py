"""The Ollama API through the gateway against fake Ollamas on real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.unit.gateway.conftest import MakeGateway
from tests.unit.gateway.fakes import FakeOllama


async def lines_of(resp: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (await resp.read()).splitlines() if line.strip()]


async def test_root_and_version(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a", version="0.9.1"), FakeOllama("b", version="0.10.0"))
    resp = await gw.get("/")
    assert resp.status == 200
    assert await resp.text() == "Ollama is running"
    head = await gw.session.head(gw.url + "/")
    assert head.status == 200
    resp = await gw.get("/api/version")
    assert await resp.json() == {"version": "0.9.1"}  # the oldest node decides what the cluster can do


async def test_generate_streams_ndjson_with_backend_headers(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a", tokens=3))
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert resp.headers["X-Sollol-Backend"] == "a"
    assert float(resp.headers["X-Sollol-Overhead-Ms"]) >= 0
    assert resp.headers["Server-Timing"].startswith("gateway;dur=")
    chunks = await lines_of(resp)
    assert [c["response"] for c in chunks] == ["a-0 ", "a-1 ", "a-2 ", ""]
    assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] == 3


async def test_stream_false_gives_one_object(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a", tokens=3))
    resp = await gw.post(
        "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    data = await resp.json()
    assert data["message"] == {"role": "assistant", "content": "a-0 a-1 a-2 "}
    assert data["done"] is True and data["done_reason"] == "stop" and data["eval_count"] == 3


async def test_request_fields_are_passed_through(gateway: MakeGateway) -> None:
    fake = FakeOllama("a")
    gw = await gateway(fake)
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi", "images": ["aGVsbG8="]}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "format": {"type": "object"},
        "options": {"temperature": 0, "seed": 7, "stop": ["x"]},
        "keep_alive": "5m",
        "think": False,
        "future_field": {"kept": True},
    }
    resp = await gw.post("/api/chat", body)
    await resp.read()
    assert fake.bodies[-1] == {**body, "stream": True}


async def test_chunks_are_forwarded_as_they_arrive(gateway: MakeGateway) -> None:
    fake = FakeOllama("a", tokens=3, delay=0.3)
    gw = await gateway(fake)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi"})
    first = await resp.content.readline()
    assert json.loads(first)["response"] == "a-0 "
    assert loop.time() - started < 0.25  # long before the upstream finished (~0.9 s)
    await resp.read()


async def test_unknown_model_is_404_in_ollama_shape(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a"))
    resp = await gw.post("/api/generate", {"model": "nope", "prompt": "hi"})
    assert resp.status == 404
    assert "nope" in (await resp.json())["error"]


async def test_error_after_first_byte_ends_the_stream_with_an_error_line(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a", tokens=5, fail_after=2))
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi"})
    assert resp.status == 200
    chunks = await lines_of(resp)
    assert [c.get("response") for c in chunks[:2]] == ["a-0 ", "a-1 "]
    assert "the runner crashed" in chunks[-1]["error"]
    assert len(chunks) == 3


async def test_tags_are_the_union_without_duplicates(gateway: MakeGateway) -> None:
    a = FakeOllama("a", models=["tiny:latest", "shared:7b"])
    b = FakeOllama("b", models=["Shared:7b", "other", "library/tiny"])
    gw = await gateway(a, b)
    models = (await (await gw.get("/api/tags")).json())["models"]
    assert [m["name"] for m in models] == ["other:latest", "shared:7b", "tiny:latest"]
    assert models[1]["digest"] == "abcshared:7b"  # the first node's entry, fields kept


async def test_ps_says_where_each_model_is_loaded(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a"), FakeOllama("b", models=["other"]))
    models = (await (await gw.get("/api/ps")).json())["models"]
    assert {(m["name"], m["sollol"]["backend"]) for m in models} == {("tiny:latest", "a"), ("other:latest", "b")}


async def test_show_asks_a_node_that_has_the_model(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a", models=["x"]), FakeOllama("b", models=["tiny"]))
    resp = await gw.post("/api/show", {"model": "tiny"})
    assert (await resp.json())["model_info"]["served_by"] == "b"
    resp = await gw.post("/api/show", {"name": "tiny"})  # the older spelling
    assert resp.status == 200
    resp = await gw.post("/api/show", {"model": "nope"})
    assert resp.status == 404
    assert (await resp.json()) == {"error": "model 'nope' not found"}


async def test_embed_and_legacy_embeddings(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a"))
    data = await (await gw.post("/api/embed", {"model": "tiny", "input": ["ab", "abc"]})).json()
    assert data["embeddings"] == [[2.0, 1.0, 0.5], [3.0, 1.0, 0.5]]
    resp = await gw.post("/api/embeddings", {"model": "tiny", "prompt": "abcd"})
    assert resp.headers["X-Sollol-Backend"] == "a"
    assert await resp.json() == {"embedding": [4.0, 1.0, 0.5]}
    # A one-shot answer has no time to first token: it must not skew the router's speed estimate.
    assert gw.runtime.monitor.view("a").speed.ttft_s is None
    assert "ttft_ms" not in json.loads(gw.log[-1])


async def test_pull_goes_to_assigned_nodes_as_one_merged_stream(gateway: MakeGateway) -> None:
    a, b, c = FakeOllama("a"), FakeOllama("b"), FakeOllama("c", models=["other"])
    gw = await gateway(a, b, c)  # the manifest assigns tiny:latest to a and b (see cluster_of)
    resp = await gw.post("/api/pull", {"model": "tiny"})
    lines = await lines_of(resp)
    assert lines[0] == {"status": "pulling manifest"}
    progress = [line for line in lines if "digest" in line]
    assert progress[-1] == {"status": "pulling d1", "digest": "sha256:d1", "total": 200, "completed": 200}
    assert [line["status"] for line in lines if "digest" not in line][1:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert a.models.count("tiny") == 1 and b.models.count("tiny") == 1 and "tiny" not in c.models
    resp = await gw.post("/api/pull", {"model": "tiny", "stream": False})
    assert await resp.json() == {"status": "success"}


async def test_pull_of_an_unassigned_model_is_refused(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a"))
    resp = await gw.post("/api/pull", {"model": "elsewhere"})
    assert resp.status == 400
    assert "nodes[].ollama.models" in (await resp.json())["error"]


async def test_pull_reaches_the_ollamas_listed_under_backends(gateway: MakeGateway) -> None:
    """Unmanaged Ollamas cannot be assigned models in the manifest: every pull goes to them as well."""
    a, b = FakeOllama("a"), FakeOllama("b", models=["other"])
    await b.start()
    try:
        gw = await gateway(a, backends=[{"name": "b", "kind": "ollama", "address": "127.0.0.1", "port": b.port}])
        resp = await gw.post("/api/pull", {"model": "extra"})  # on no node: b alone
        assert resp.headers["X-Sollol-Backend"] == "b"
        lines = await lines_of(resp)
        assert lines[-1] == {"status": "success"}
        assert [line for line in lines if "digest" in line][-1]["total"] == 100
        assert "extra" in b.models and "extra" not in a.models
        resp = await gw.post("/api/pull", {"model": "tiny"})  # assigned to a: a and b
        assert resp.headers["X-Sollol-Backend"] == "a,b"
        lines = await lines_of(resp)
        assert [line for line in lines if "digest" in line][-1] == {
            "status": "pulling d1", "digest": "sha256:d1", "total": 200, "completed": 200,
        }  # fmt: skip
        assert a.models == ["tiny:latest", "tiny"] and b.models == ["other", "extra", "tiny"]
        listed = [m["name"] for m in (await (await gw.get("/api/tags")).json())["models"]]
        assert "extra:latest" in listed  # re-probed after the pull: routable at once
    finally:
        await b.stop()


async def test_pull_failure_ends_the_stream_with_an_error_line(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a", models=["missing:latest"]))
    lines = await lines_of(await gw.post("/api/pull", {"model": "missing:latest"}))
    assert "file does not exist" in lines[-1]["error"]
    assert {"status": "success"} not in lines


async def test_delete_and_copy_on_the_nodes_that_hold_the_model(gateway: MakeGateway) -> None:
    a, b = FakeOllama("a", models=["tiny", "x"]), FakeOllama("b", models=["x"])
    gw = await gateway(a, b)
    resp = await gw.post("/api/copy", {"source": "x", "destination": "y"})
    assert resp.status == 200
    assert a.copied == [("x", "y")] and b.copied == [("x", "y")]
    resp = await gw.session.delete(gw.url + "/api/delete", json={"model": "tiny"})
    assert resp.status == 200
    assert a.deleted == ["tiny"] and b.deleted == []
    resp = await gw.session.delete(gw.url + "/api/delete", json={"model": "tiny"})
    assert resp.status == 404  # the probe after the delete already knows it is gone


async def test_unsupported_routes_say_so_without_a_500(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a"))
    resp = await gw.post("/api/create", {"model": "x"})
    assert resp.status == 501
    assert "ollama create" in (await resp.json())["error"]
    resp = await gw.post("/api/nothing", {"model": "x"})
    assert resp.status == 404
    assert "not part of the Ollama, OpenAI or Anthropic API" in (await resp.json())["error"]
    resp = await gw.get("/api/chat")
    assert resp.status == 405
    assert "use POST" in (await resp.json())["error"]


async def test_malformed_bodies_get_400_naming_the_field(gateway: MakeGateway) -> None:
    gw = await gateway(FakeOllama("a"))
    cases = [
        (b"", "missing request body"),
        (b"{", "invalid JSON body"),
        (b"[1]", "must be a JSON object"),
        (b'{"prompt": "x"}', "model is required"),
        (b'{"model": 3}', "'model' must be a string"),
        (b'{"model": "tiny", "options": {"temperature": "hot"}}', "'options.temperature' must be a number"),
        (b'{"model": "tiny", "stream": "yes"}', "'stream' must be true or false"),
        (b'{"model": "tiny", "seed": NaN}', "invalid JSON body"),
    ]
    for raw, message in cases:
        resp = await gw.post("/api/generate", data=raw)
        assert resp.status == 400, raw
        assert message in (await resp.json())["error"], raw
    resp = await gw.post("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": ["a"]}]})
    assert (await resp.json())["error"] == "invalid request: 'messages[0].content' must be a string, not a list"
