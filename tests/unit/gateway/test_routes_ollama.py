"""The Ollama API through the gateway against Ollama stand-ins on real sockets."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.standin.ollama_standin import ModelSpec, _layers
from tests.unit.gateway.conftest import MakeGateway, MakeStandin, answer


async def lines_of(resp: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (await resp.read()).splitlines() if line.strip()]


async def direct(url: str, path: str, body: dict[str, Any]) -> Any:
    """The same request straight to a stand-in."""
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as resp:
        return await resp.json()


async def direct_get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url + path) as resp:
        return await resp.json()


async def test_root_and_version(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a", version="0.9.1"), standin("b", version="0.10.0"))
    resp = await gw.get("/")
    assert resp.status == 200
    assert await resp.text() == "Ollama is running"
    head = await gw.session.head(gw.url + "/")
    assert head.status == 200
    resp = await gw.get("/api/version")
    assert await resp.json() == {"version": "0.9.1"}  # the oldest node decides what the cluster can do


async def test_generate_streams_ndjson_with_backend_headers(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=3)
    gw = await gateway(a)
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/x-ndjson"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert resp.headers["X-Sollol-Backend"] == "a"
    assert float(resp.headers["X-Sollol-Overhead-Ms"]) >= 0
    assert resp.headers["Server-Timing"].startswith("gateway;dur=")
    chunks = await lines_of(resp)
    assert [c["response"] for c in chunks] == [*answer(a, "hi", 3), ""]
    assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] == 3


async def test_stream_false_gives_one_object(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=3)
    gw = await gateway(a)
    resp = await gw.post(
        "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    data = await resp.json()
    assert data["message"] == {"role": "assistant", "content": "".join(answer(a, "user: hi", 3))}
    assert data["done"] is True and data["done_reason"] == "stop" and data["eval_count"] == 3


async def test_request_fields_are_passed_through(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a")
    gw = await gateway(a)
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
    assert a.stats()["bodies"][-1] == {**body, "stream": True}


async def test_chunks_are_forwarded_as_they_arrive(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=3, faults={"hold_after_tokens": 1})  # the rest waits for release()
    gw = await gateway(a)
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi"})
    first = await resp.content.readline()
    assert json.loads(first)["response"] == answer(a, "hi", 3)[0]
    stats = a.stats()  # the client has the first token while the upstream is still holding the rest
    assert (stats["held"], stats["completed"]) == (1, 0)
    a.release()
    rest = await lines_of(resp)
    assert [c["response"] for c in rest] == [*answer(a, "hi", 3)[1:], ""] and rest[-1]["done"] is True


async def test_unknown_model_is_404_in_ollama_shape(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    resp = await gw.post("/api/generate", {"model": "nope", "prompt": "hi"})
    assert resp.status == 404
    assert "nope" in (await resp.json())["error"]


async def test_error_after_first_byte_ends_the_stream_with_an_error_line(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    a = standin("a", response_tokens=5, faults={"error_after_tokens": 2, "message": "the runner crashed"})
    gw = await gateway(a)
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi"})
    assert resp.status == 200
    chunks = await lines_of(resp)
    assert [c.get("response") for c in chunks[:2]] == answer(a, "hi", 2)
    assert "the runner crashed" in chunks[-1]["error"]
    assert len(chunks) == 3


async def test_tags_are_the_union_without_duplicates(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", models=["tiny:latest", {"name": "shared:7b", "digest": "a" * 64}])
    b = standin("b", models=[{"name": "Shared:7b", "digest": "b" * 64}, "other", "library/tiny"])
    gw = await gateway(a, b)
    models = (await (await gw.get("/api/tags")).json())["models"]
    assert [m["name"] for m in models] == ["other:latest", "shared:7b", "tiny:latest"]
    assert models[1]["digest"] == "a" * 64  # the first node's entry, fields kept


async def test_ps_says_where_each_model_is_loaded(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a", loaded=["tiny"]), standin("b", models=["other"], loaded=["other"]))
    models = (await (await gw.get("/api/ps")).json())["models"]
    assert {(m["name"], m["sollol"]["backend"]) for m in models} == {("tiny:latest", "a"), ("other:latest", "b")}


async def test_show_asks_a_node_that_has_the_model(gateway: MakeGateway, standin: MakeStandin) -> None:
    b = standin("b", models=[{"name": "tiny", "block_count": 7}])
    gw = await gateway(standin("a", models=["x"]), b)
    resp = await gw.post("/api/show", {"model": "tiny"})
    info = (await resp.json())["model_info"]
    assert info == (await direct(b.url, "/api/show", {"model": "tiny"}))["model_info"]
    assert info["llama.block_count"] == 7  # b's answer: a does not have the model
    resp = await gw.post("/api/show", {"name": "tiny"})  # the older spelling
    assert resp.status == 200
    resp = await gw.post("/api/show", {"model": "nope"})
    assert resp.status == 404
    assert (await resp.json()) == {"error": "model 'nope' not found"}


async def test_embed_and_legacy_embeddings(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a")
    gw = await gateway(a)
    data = await (await gw.post("/api/embed", {"model": "tiny", "input": ["ab", "abc"]})).json()
    expected = (await direct(a.url, "/api/embed", {"model": "tiny", "input": ["ab", "abc", "abcd"]}))["embeddings"]
    assert data["embeddings"] == expected[:2] and expected[0] != expected[1]
    resp = await gw.post("/api/embeddings", {"model": "tiny", "prompt": "abcd"})
    assert resp.headers["X-Sollol-Backend"] == "a"
    assert await resp.json() == {"embedding": expected[2]}
    # A one-shot answer has no time to first token: it must not skew the router's speed estimate.
    assert gw.runtime.monitor.view("a").speed.ttft_s is None
    assert "ttft_ms" not in json.loads(gw.log[-1])


async def test_pull_goes_to_assigned_nodes_as_one_merged_stream(gateway: MakeGateway, standin: MakeStandin) -> None:
    a, b, c = standin("a"), standin("b"), standin("c", models=["other"])
    gw = await gateway(a, b, c)  # the manifest assigns tiny:latest to a and b (see cluster_of)
    resp = await gw.post("/api/pull", {"model": "tiny"})
    lines = await lines_of(resp)
    assert lines[0] == {"status": "pulling manifest"}
    progress = [line for line in lines if "digest" in line]
    digest, size = _layers(ModelSpec("tiny"))[-1]  # the last layer a stand-in pulls; both nodes pull it
    assert progress[-1] == {
        "status": f"pulling {digest[7:19]}",
        "digest": digest,
        "total": 2 * size,
        "completed": 2 * size,
    }
    assert [line["status"] for line in lines if "digest" not in line][1:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    pulls = [s.stats()["requests"].get("POST /api/pull") for s in (a, b, c)]
    assert pulls == [1, 1, None]
    resp = await gw.post("/api/pull", {"model": "tiny", "stream": False})
    assert await resp.json() == {"status": "success"}


async def test_pull_of_an_unassigned_model_is_refused(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    resp = await gw.post("/api/pull", {"model": "elsewhere"})
    assert resp.status == 400
    assert "nodes[].ollama.models" in (await resp.json())["error"]


async def test_pull_reaches_the_ollamas_listed_under_backends(gateway: MakeGateway, standin: MakeStandin) -> None:
    """Unmanaged Ollamas cannot be assigned models in the manifest: every pull goes to them as well."""
    a, b = standin("a"), standin("b", models=["other"], pullable=["extra", "tiny"])
    gw = await gateway(a, backends=[{"name": "b", "kind": "ollama", "address": "127.0.0.1", "port": b.port}])
    resp = await gw.post("/api/pull", {"model": "extra"})  # on no node: b alone
    assert resp.headers["X-Sollol-Backend"] == "b"
    lines = await lines_of(resp)
    assert lines[-1] == {"status": "success"}
    digest, size = _layers(ModelSpec("extra"))[-1]
    assert [line for line in lines if "digest" in line][-1]["total"] == size
    resp = await gw.post("/api/pull", {"model": "tiny"})  # assigned to a: a and b
    assert resp.headers["X-Sollol-Backend"] == "a,b"
    lines = await lines_of(resp)
    digest, size = _layers(ModelSpec("tiny"))[-1]
    assert [line for line in lines if "digest" in line][-1] == {
        "status": f"pulling {digest[7:19]}", "digest": digest, "total": 2 * size, "completed": 2 * size,
    }  # fmt: skip
    assert [s.stats()["requests"].get("POST /api/pull") for s in (a, b)] == [1, 2]
    on_b = [m["name"] for m in (await direct_get(b.url, "/api/tags"))["models"]]
    assert sorted(on_b) == ["extra:latest", "other:latest", "tiny:latest"]
    listed = [m["name"] for m in (await (await gw.get("/api/tags")).json())["models"]]
    assert "extra:latest" in listed  # re-probed after the pull: routable at once


async def test_pull_failure_ends_the_stream_with_an_error_line(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"), assign=["missing:latest"])  # the stand-in cannot pull it
    lines = await lines_of(await gw.post("/api/pull", {"model": "missing:latest"}))
    assert "file does not exist" in lines[-1]["error"]
    assert {"status": "success"} not in lines


async def test_delete_and_copy_on_the_nodes_that_hold_the_model(gateway: MakeGateway, standin: MakeStandin) -> None:
    a, b = standin("a", models=["tiny", "x"]), standin("b", models=["x"])
    gw = await gateway(a, b)

    async def names(node: Any) -> list[str]:
        async with aiohttp.ClientSession() as session, session.get(node.url + "/api/tags") as resp:
            return sorted(m["name"] for m in (await resp.json())["models"])

    resp = await gw.post("/api/copy", {"source": "x", "destination": "y"})
    assert resp.status == 200
    assert [s.stats()["bodies"] for s in (a, b)] == [[{"source": "x", "destination": "y"}]] * 2
    assert await names(a) == ["tiny:latest", "x:latest", "y:latest"] and await names(b) == ["x:latest", "y:latest"]
    resp = await gw.session.delete(gw.url + "/api/delete", json={"model": "tiny"})
    assert resp.status == 200
    assert [s.stats()["requests"].get("DELETE /api/delete") for s in (a, b)] == [1, None]
    assert await names(a) == ["x:latest", "y:latest"]
    resp = await gw.session.delete(gw.url + "/api/delete", json={"model": "tiny"})
    assert resp.status == 404  # the probe after the delete already knows it is gone


async def test_unsupported_routes_say_so_without_a_500(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    resp = await gw.post("/api/create", {"model": "x"})
    assert resp.status == 501
    assert "ollama create" in (await resp.json())["error"]
    resp = await gw.post("/api/nothing", {"model": "x"})
    assert resp.status == 404
    assert "not part of the Ollama, OpenAI or Anthropic API" in (await resp.json())["error"]
    resp = await gw.get("/api/chat")
    assert resp.status == 405
    assert "use POST" in (await resp.json())["error"]


async def test_malformed_bodies_get_400_naming_the_field(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
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
