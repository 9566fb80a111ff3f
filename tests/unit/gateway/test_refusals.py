"""Refusals are not failures (issue 17): a backend that answers 404 (no such route or model), 501 (feature
not supported) or 503 (loading) keeps serving everything else, with no 503 "none is healthy" anywhere.
Only a backend that fails (no answer, a broken stream, a 500) counts against its circuit breaker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sollol_cli.backends.base import UpstreamError
from sollol_cli.gateway.problems import error_body, problem_for
from sollol_cli.health import BreakerPhase
from tests.harness.ollama import StandinHandle
from tests.standin.llama_standins import chat_answer, serving_llama
from tests.unit.gateway.conftest import Gateway, MakeGateway, MakeStandin

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "tiny", "messages": MESSAGES, "stream": False}
GIN_404 = "404 page not found"  # what an Ollama (Gin) answers for a route it does not have


def breaker(gw: Gateway, name: str) -> tuple[BreakerPhase, int]:
    view = gw.runtime.monitor.view(name)
    return gw.runtime.monitor.breaker.phase(view.breaker, 0.0), view.breaker.failures


def asked(standin: StandinHandle, route: str = "POST /api/chat") -> int:
    return int(standin.stats()["requests"].get(route, 0))


async def test_embeddings_refused_by_llama_server_then_chat_on_it(gateway: MakeGateway, standin: MakeStandin) -> None:
    """Three /api/embed to a llama-server without --embeddings, then chat: the 501 reaches the caller each
    time with a message saying how to turn embeddings on, and the node stays in service."""
    async with serving_llama(["-m", "/models/tiny.gguf"]) as port:
        backends = [{"name": "llama", "kind": "llamacpp", "address": "127.0.0.1", "port": port}]
        gw = await gateway(standin("ollama", models=["other"]), backends=backends)
        for _ in range(3):
            resp = await gw.post("/api/embed", {"model": "tiny", "input": "x"})
            assert resp.status == 501
            fix = "sollol does not manage it: start it with --embeddings --pooling last"
            message = f"this llama-server serves no embeddings; {fix}"
            assert (await resp.json()) == {"error": f"llama (127.0.0.1:{port}): {message}"}
        resp = await gw.post("/v1/embeddings", {"model": "tiny", "input": "x"})
        assert resp.status == 501
        assert (await resp.json())["error"]["message"].endswith(fix)
        resp = await gw.post("/api/chat", CHAT)
        assert resp.status == 200, await resp.text()
        assert resp.headers["X-Sollol-Backend"] == "llama"
        assert (await resp.json())["message"]["content"] == chat_answer("tiny", MESSAGES)
        assert breaker(gw, "llama") == (BreakerPhase.closed, 0)
        assert gw.runtime.monitor.view("llama").probe.healthy
        statuses = [json.loads(line)["status"] for line in gw.log]
        assert statuses == [501, 501, 501, 501, 200]


async def test_a_route_one_node_lacks_leaves_every_model_on_both_nodes_served(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    """Ollama nodes without /v1/completions (an older Ollama): the 404 is passed on, as often as asked,
    and every model on both nodes still answers."""
    older = {"missing_routes": ["/v1/completions"]}
    a = standin("a", models=["tiny", "only-a"], **older)
    b = standin("b", models=["tiny", "only-b"], **older)
    gw = await gateway(a, b)
    for _ in range(4):
        resp = await gw.post("/v1/completions", {"model": "tiny", "prompt": "x"})
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["type"] == "not_found_error" and error["message"] == GIN_404
    for model in ("tiny", "tiny", "only-a", "only-b"):
        resp = await gw.post("/api/chat", {**CHAT, "model": model})
        assert resp.status == 200, await resp.text()
    assert {json.loads(line)["backend"] for line in gw.log[-4:]} == {"a", "b"}
    assert breaker(gw, "a") == breaker(gw, "b") == (BreakerPhase.closed, 0)


async def delete_behind_the_gateways_back(gw: Gateway, standin: StandinHandle, model: str) -> None:
    """Ollama's own /api/delete, straight to the node: the gateway still lists the model there."""
    async with gw.session.delete(standin.url + "/api/delete", json={"model": model}) as resp:
        assert resp.status == 200


async def test_model_not_found_on_one_backend_is_tried_on_another(gateway: MakeGateway, standin: MakeStandin) -> None:
    """A node whose list still shows the model but that no longer has it sends the request elsewhere."""
    gone = {"error": "model 'tiny' not found"}  # Ollama's own answer for a model it does not have
    a, b = standin("a"), standin("b")
    gw = await gateway(a, b, routing={"retries": 0})
    await delete_behind_the_gateways_back(gw, a, "tiny")
    for _ in range(4):
        resp = await gw.post("/api/chat", CHAT)
        assert resp.status == 200
        assert resp.headers["X-Sollol-Backend"] == "b"
    assert asked(a) == 4  # a was asked each time it was the first choice, never failed
    assert breaker(gw, "a") == (BreakerPhase.closed, 0)
    c = standin("c")
    only_c = await gateway(c)
    await delete_behind_the_gateways_back(only_c, c, "tiny")
    resp = await only_c.post("/api/chat", CHAT)
    assert (resp.status, await resp.json()) == (404, gone)  # nobody else has it: its own answer


def loading(times: int) -> dict[str, Any]:
    """The next `times` chats answer 503 "Loading model"."""
    return {"http_error_next": times, "http_error_status": 503, "message": "Loading model", "routes": ["/api/chat"]}


async def test_a_busy_loading_backend_is_waited_for_not_counted(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", faults=loading(2))
    gw = await gateway(a)
    resp = await gw.post("/api/chat", CHAT)
    assert resp.status == 200, await resp.text()
    stats = a.stats()
    assert stats["faults_fired"] == {"http_error": 2} and a.set_faults()["http_error_next"] == 0
    assert asked(a) == 3 and stats["completed"] == 1  # two 503s, then the one chat it generated
    assert breaker(gw, "a") == (BreakerPhase.closed, 0)


async def test_still_loading_after_the_queue_wait_gets_its_503(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", faults=loading(100))
    gw = await gateway(a, routing={"queue_wait": 0.2})
    resp = await gw.post("/api/chat", CHAT)
    assert resp.status == 503
    assert (await resp.json()) == {"error": f"a (127.0.0.1:{a.port}): Loading model"}
    assert breaker(gw, "a") == (BreakerPhase.closed, 0)


async def test_a_server_error_still_counts_and_goes_elsewhere(gateway: MakeGateway, standin: MakeStandin) -> None:
    crash = "llama runner process has terminated: exit status 2"
    a = standin("a", faults={"http_500_next": 3, "message": crash, "routes": ["/api/chat"]})
    b = standin("b")
    gw = await gateway(a, b, routing={"retries": 1})
    backends: list[Any] = []
    for _ in range(4):
        resp = await gw.post("/api/chat", CHAT)
        assert resp.status == 200
        backends.append(resp.headers["X-Sollol-Backend"])
    assert backends == ["b"] * 4
    assert a.stats()["faults_fired"] == {"http_500": 3}
    assert breaker(gw, "a") == (BreakerPhase.open, 3)  # three crashes: taken out for the cooldown
    resp = await gw.post("/api/chat", {**CHAT, "model": "tiny"})
    assert resp.status == 200


async def test_responses_and_messages_a_node_lacks_are_refused_not_failed(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    """An older Ollama without /v1/responses and /v1/messages: 404 in each API's own error shape."""
    a = standin("a", missing_routes=["/v1/responses", "/v1/messages"])
    gw = await gateway(a)
    for _ in range(3):
        resp = await gw.post("/v1/responses", {"model": "tiny", "input": "hi"})
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "not_found_error"
        resp = await gw.post("/v1/messages", {"model": "tiny", "max_tokens": 5, "messages": [{"role": "user"}]})
        assert resp.status == 404
        body = await resp.json()
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert asked(a, "POST /v1/responses") == asked(a, "POST /v1/messages") == 3
    assert (await gw.post("/api/chat", CHAT)).status == 200
    assert breaker(gw, "a") == (BreakerPhase.closed, 0)


# (id, backend status, its message, status and message the caller gets)
PROBLEM_CASES = [
    ("bad-request", 400, "invalid options", 400, "invalid options"),
    ("not-found", 404, "model 'x' not found", 404, "model 'x' not found"),
    ("not-supported", 501, "no embeddings", 501, "b (h:1): no embeddings"),
    ("loading", 503, "Loading model", 503, "b (h:1): Loading model"),
    ("option-type-500", 500, 'option "seed" must be of type integer', 400,
     'b (h:1): option "seed" must be of type integer'),
    ("unsupported-500", 500, "image input is not supported", 501, "b (h:1): image input is not supported"),
    ("crash", 500, "runner crashed", 502, "b (h:1): HTTP 500: runner crashed"),
    ("bad-gateway", 502, "Bad Gateway", 502, "b (h:1): HTTP 502: Bad Gateway"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "message", "to_status", "to_message"), [c[1:] for c in PROBLEM_CASES], ids=[c[0] for c in PROBLEM_CASES]
)
def test_what_the_caller_gets_for_a_backends_error(status: int, message: str, to_status: int, to_message: str) -> None:
    problem = problem_for(UpstreamError("b (h:1)", status, message))
    assert (problem.status, problem.message) == (to_status, to_message)


def test_each_route_family_gets_its_own_error_shape() -> None:
    assert error_body("/api/chat", 404, "m") == {"error": "m"}
    assert error_body("/v1/responses", 404, "m") == {
        "error": {"message": "m", "type": "not_found_error", "param": None, "code": None}
    }
    assert error_body("/v1/messages", 503, "m") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "m"},
    }
    assert error_body("/v1/messages", 502, "m")["error"]["type"] == "api_error"
    assert error_body("/v1/messages", 422, "m")["error"]["type"] == "invalid_request_error"
