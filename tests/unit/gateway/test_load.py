"""Client disconnects free the slot and leave the queue, and `serve` shuts down gracefully (the streams over
several stand-ins and a backend killed under load are in test_with_standins)."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.settings import Settings
from tests.unit.gateway.conftest import MakeGateway, MakeStandin, answer, cluster_of, until


@dataclass
class Reply:
    backend: str | None
    tokens: list[str]
    error: str | None  # the error line that ended the stream


async def chat_tokens(session: aiohttp.ClientSession, url: str, i: int) -> Reply:
    body = {"model": "tiny", "messages": [{"role": "user", "content": str(i)}]}
    async with session.post(url + "/api/chat", json=body) as resp:
        assert resp.status == 200, await resp.text()
        chunks = [json.loads(line) async for line in resp.content if line.strip()]
    error = chunks[-1].get("error")
    assert error or chunks[-1]["done"] is True
    tokens = [c["message"]["content"] for c in chunks if not c.get("done") and "message" in c]
    return Reply(resp.headers.get("X-Sollol-Backend"), tokens, error)


async def test_client_disconnect_cancels_upstream_and_frees_the_slot(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    a = standin("a", response_tokens=2, faults={"hold_after_tokens": 1})
    gw = await gateway(a, slots=1)
    view = gw.runtime.monitor.view("a")
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "x"})
    await resp.content.readline()
    assert view.in_flight == 1
    resp.close()  # the client goes away mid-stream, while the upstream holds the rest
    await until(lambda: a.stats()["cancelled"] == 1 and view.in_flight == 0, "the upstream cancelled")
    assert a.stats()["completed"] == 0
    assert view.breaker.failures == 0  # a client leaving is not the backend's fault
    a.clear_faults()
    reply = await chat_tokens(gw.session, gw.url, 1)  # the one slot is free again
    assert reply.tokens == answer(a, "user: 1", 2)
    assert json.loads(gw.log[0])["status"] == 499


async def test_disconnect_while_queued_leaves_the_queue(gateway: MakeGateway, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=3, faults={"hold_after_tokens": 1})
    gw = await gateway(a, slots=1)
    busy = asyncio.create_task(chat_tokens(gw.session, gw.url, 0))
    await until(lambda: a.stats()["held"] == 1, "the first request holding the one slot")
    waiting = asyncio.create_task(gw.post("/api/generate", {"model": "tiny", "prompt": "x"}))
    await until(lambda: gw.runtime.dispatcher.waiting == 1, "the second request in the queue")
    text = await (await gw.get("/metrics")).text()
    assert "sollol_gateway_queue_depth 1.0" in text
    waiting.cancel()
    await until(lambda: gw.runtime.dispatcher.waiting == 0, "the queue empty again")
    a.release()
    assert (await busy).tokens == answer(a, "user: 0", 3)
    requests = a.stats()["requests"]
    assert requests["POST /api/chat"] == 1 and "POST /api/generate" not in requests  # the cancelled one never went


async def test_serve_shuts_down_gracefully(tmp_path: Any, standin: MakeStandin) -> None:
    a = standin("a", response_tokens=40, faults={"hold_after_tokens": 1})
    cluster = cluster_of([a], slots=2)
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    options = ServeOptions("127.0.0.1", 0, grace_s=10)
    server = asyncio.create_task(serve(cluster, Settings(), options, stop, on_listening=listening.set_result))
    try:
        url = (await asyncio.wait_for(listening, 10)).url
        port = int(url.rsplit(":", 1)[1])
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(chat_tokens(session, url, 0))
            await until(lambda: a.stats()["held"] == 1, "a stream under way")
            stop.set()
            await until(lambda: not accepting(port), "the gateway no longer accepting")
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as fresh:
                    await fresh.get(url + "/api/version")
            a.release()
            reply = await in_flight  # the stream that was running finished whole
            assert reply.error is None and reply.tokens == answer(a, "user: 0", 40)
        await asyncio.wait_for(server, 10)
    finally:
        server.cancel()


def accepting(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_stop_cuts_what_runs_past_the_grace_period_with_an_error_in_its_own_api(standin: MakeStandin) -> None:
    """Streams still running when the grace period ends get a last error frame in their API's own shape
    (Ollama's NDJSON `{"error"}` line, an OpenAI SSE error event), not a dropped connection, and the access
    log says the server cut them rather than that the client left (499)."""
    a = standin("a", response_tokens=40, num_parallel=2, faults={"hold_after_tokens": 1})  # never released
    log: list[str] = []
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    options = ServeOptions("127.0.0.1", 0, log=log.append, log_format="json", grace_s=0.2)
    server = asyncio.create_task(serve(cluster_of([a]), Settings(), options, stop, on_listening=listening.set_result))
    reason = "the server is shutting down: the request ran past its 0.2 s grace period"
    try:
        url = (await asyncio.wait_for(listening, 10)).url
        async with aiohttp.ClientSession() as session:
            ollama = asyncio.create_task(chat_tokens(session, url, 0))
            body = {"model": "tiny", "messages": [{"role": "user", "content": "1"}], "stream": True}
            openai = asyncio.create_task(session.post(url + "/v1/chat/completions", json=body))
            await until(lambda: a.stats()["held"] == 2, "both streams under way")
            stop.set()
            reply = await ollama
            assert reply.error == reason and reply.tokens == answer(a, "user: 0", 1)
            resp = await openai
            assert resp.status == 200
            events = [line for line in (await resp.text()).split("\n\n") if line.strip()]
            last = json.loads(events[-1].removeprefix("data: "))
            assert last["error"]["message"] == reason
            assert len(events) >= 2  # the stand-in's first chunk came before the cut
        await asyncio.wait_for(server, 10)
    finally:
        server.cancel()
    entries = sorted((json.loads(line)["path"], json.loads(line)["status"], json.loads(line)["error"]) for line in log)
    assert entries == [("/api/chat", 200, reason), ("/v1/chat/completions", 200, reason)]


async def test_stop_answers_503_to_a_request_cut_before_its_first_byte(standin: MakeStandin) -> None:
    a = standin("a", faults={"hang": True, "routes": ["/api/chat"]})  # accepts the chat and never answers
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    options = ServeOptions("127.0.0.1", 0, grace_s=0.2)
    server = asyncio.create_task(serve(cluster_of([a]), Settings(), options, stop, on_listening=listening.set_result))
    try:
        url = (await asyncio.wait_for(listening, 10)).url
        async with aiohttp.ClientSession() as session:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "1"}]}
            pending = asyncio.create_task(session.post(url + "/api/chat", json=body))
            await until(lambda: a.stats()["requests"].get("POST /api/chat") == 1, "the request at the backend")
            stop.set()
            resp = await pending
            assert resp.status == 503
            assert await resp.json() == {
                "error": "the server is shutting down: the request ran past its 0.2 s grace period"
            }
        await asyncio.wait_for(server, 10)
    finally:
        server.cancel()
