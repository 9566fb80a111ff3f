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
