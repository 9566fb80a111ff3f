"""Client disconnects free the slot and leave the queue, and `serve` shuts down gracefully (the streams over
several stand-ins and a backend killed under load are in test_with_standins)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.settings import Settings
from tests.unit.gateway.conftest import MakeGateway, cluster_of
from tests.unit.gateway.fakes import FakeOllama


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


async def test_client_disconnect_cancels_upstream_and_frees_the_slot(gateway: MakeGateway) -> None:
    fake = FakeOllama("a", tokens=1000, delay=0.01)
    gw = await gateway(fake, slots=1)
    view = gw.runtime.monitor.view("a")
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "x"})
    await resp.content.readline()
    assert view.in_flight == 1
    resp.close()  # the client goes away mid-stream
    for _ in range(100):
        if fake.cancelled and view.in_flight == 0:
            break
        await asyncio.sleep(0.02)
    assert fake.cancelled == 1
    assert view.in_flight == 0
    assert view.breaker.failures == 0  # a client leaving is not the backend's fault
    fake.tokens, fake.delay = 2, 0.0
    reply = await chat_tokens(gw.session, gw.url, 1)  # the one slot is free again
    assert reply.tokens == ["a-0 ", "a-1 "]
    assert json.loads(gw.log[0])["status"] == 499


async def test_disconnect_while_queued_leaves_the_queue(gateway: MakeGateway) -> None:
    fake = FakeOllama("a", tokens=50, delay=0.02)
    gw = await gateway(fake, slots=1)
    busy = asyncio.create_task(chat_tokens(gw.session, gw.url, 0))
    await asyncio.sleep(0.1)
    waiting = asyncio.create_task(gw.post("/api/generate", {"model": "tiny", "prompt": "x"}))
    await asyncio.sleep(0.2)
    assert gw.runtime.dispatcher.waiting == 1
    text = await (await gw.get("/metrics")).text()
    assert "sollol_gateway_queue_depth 1.0" in text
    waiting.cancel()
    for _ in range(50):
        if gw.runtime.dispatcher.waiting == 0:
            break
        await asyncio.sleep(0.02)
    assert gw.runtime.dispatcher.waiting == 0
    await busy
    assert fake.started == 1  # the cancelled request never reached the backend


async def test_serve_shuts_down_gracefully(tmp_path: Any) -> None:
    fake = FakeOllama("a", tokens=40, delay=0.02)
    await fake.start()
    cluster = cluster_of([fake], slots=2)
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    options = ServeOptions("127.0.0.1", 0, grace_s=10)
    server = asyncio.create_task(serve(cluster, Settings(), options, stop, on_listening=listening.set_result))
    try:
        url = (await asyncio.wait_for(listening, 10)).url
        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(chat_tokens(session, url, 0))
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.sleep(0.1)
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as fresh:
                    await fresh.get(url + "/api/version")
            reply = await in_flight  # the stream that was running finished whole
            assert reply.error is None and len(reply.tokens) == 40
        await asyncio.wait_for(server, 10)
    finally:
        server.cancel()
        await fake.stop()
