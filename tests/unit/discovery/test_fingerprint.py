"""What answers on an open port, against real listeners on 127.0.0.1: Ollama and llama-server by the shapes
of their answers, rpc-server by its protocol, busy rpc-servers by their full accept queue, and anything else
(HTTP servers that answer everything, banners, silent listeners) as "unknown"."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from sollol_cli.backends.http import close_session
from sollol_cli.discovery.fingerprint import fingerprint, fingerprint_all
from sollol_cli.events import Event, StepProgress

LOOPBACK = "127.0.0.1"
TIMEOUT = 1.0  # servers that answer do so in milliseconds; this only matters on a loaded machine
SILENT_TIMEOUT = 0.3  # the silent cases wait this long (twice), so keep it short

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(autouse=True)
async def _session() -> AsyncIterator[None]:
    yield
    await close_session()


@contextlib.asynccontextmanager
async def http_server(routes: dict[str, Any], *, default: Any = None, status: int = 200) -> AsyncIterator[int]:
    """Answers `routes[path]` as JSON; other paths get `default` (404 when None)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path in routes:
            return web.json_response(routes[request.path], status=status)
        if default is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(default)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def tcp_server(
    on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await on_connect(reader, writer)
        writer.close()

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"220 welcome\r\n")
    await writer.drain()
    await reader.read()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like a line-oriented server waiting for a newline: reads, never answers."""
    while await reader.read(1024):
        pass


async def fake_rpc_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HELLO (14) -> 7.0.0, DEVICE_COUNT (15) -> 2, GET_DEVICE_MEMORY (11) -> free/total per device."""
    memory = {0: (3 << 30, 4 << 30), 1: (1 << 30, 2 << 30)}
    while True:
        command, size = struct.unpack("<BQ", await reader.readexactly(9))
        payload = await reader.readexactly(size)
        if command == 14:
            reply = bytes([7, 0, 0]) + bytes(25)
        elif command == 15:
            reply = struct.pack("<I", 2)
        elif command == 11:
            reply = struct.pack("<QQ", *memory[struct.unpack("<I", payload)[0]])
        else:
            return  # like rpc-server: an unknown command drops the connection
        writer.write(struct.pack("<Q", len(reply)) + reply)
        await writer.drain()


OLLAMA = {"/api/version": {"version": "0.12.3"}, "/api/tags": {"models": [{"name": "tiny:latest"}, {"model": "b:7b"}]}}
LLAMA = {
    "/health": {"status": "ok"},
    "/props": {"build_info": "b6000-0c1e57098", "total_slots": 2, "model_path": "/models/tiny.gguf"},
    "/slots": [],
    "/v1/models": {"data": [{"id": "tiny"}]},
}


async def test_ollama_is_recognised_with_version_and_models() -> None:
    async with http_server(OLLAMA) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state, found.version, found.models) == (
        "ollama",
        "ready",
        "0.12.3",
        ("tiny:latest", "b:7b"),
    )
    assert found.latency_ms is not None and found.latency_ms < 300  # the HTTP answer, not the HELLO wait


async def test_llama_server_is_recognised_with_build_model_and_slots() -> None:
    async with http_server(LLAMA) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state, found.version, found.models, found.slots) == (
        "llamacpp", "ready", "b6000-0c1e57098", ("tiny",), 2,
    )  # fmt: skip


async def test_a_llama_server_loading_its_model() -> None:
    async with http_server({"/health": {"error": {"message": "Loading model", "code": 503}}}, status=503) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state) == ("llamacpp", "loading")


async def test_an_rpc_server_reports_protocol_and_memory() -> None:
    async with tcp_server(fake_rpc_server) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state, found.version, found.devices) == ("rpc", "ready", "7.0.0", 2)
    assert (found.free_bytes, found.total_bytes) == (4 << 30, 6 << 30)
    assert found.detail == ""


async def test_an_rpc_server_of_another_protocol_version_says_so() -> None:
    async def newer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(9 + 24)
        writer.write(struct.pack("<Q", 28) + bytes([8, 1, 0]) + bytes(25))
        await writer.drain()
        await reader.read()

    async with tcp_server(newer) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state, found.version, found.total_bytes) == ("rpc", "ready", "8.1.0", None)
    assert found.detail == "protocol 8.1.0: devices not queried"


@pytest.mark.parametrize(
    ("routes", "default"),
    [
        ({}, {}),  # 200 {} to everything
        ({}, {"version": "1.2.3", "status": "ok"}),  # has a version, but no Ollama tags
        ({"/api/version": {"version": "1.0"}, "/api/tags": {"tags": []}}, None),  # wrong tags shape
        ({"/api/version": {"version": 3}, "/api/tags": {"models": []}}, None),  # version is not a string
        ({"/health": {"status": "ok"}, "/props": {"model_path": "/m.gguf"}}, None),  # no build_info/total_slots
    ],
    ids=["200-to-everything", "version-everywhere", "wrong-tags", "numeric-version", "props-without-build"],
)
async def test_http_servers_that_are_not_backends_are_unknown(routes: dict[str, Any], default: Any) -> None:
    async with http_server(routes, default=default) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state) == ("unknown", "unknown")
    assert found.detail == "open, but not Ollama, llama-server or rpc-server"


async def test_a_banner_server_is_unknown() -> None:
    async with tcp_server(banner) as port:
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT, connect_ms=0.4)
    assert (found.kind, found.state, found.latency_ms) == ("unknown", "unknown", 0.4)


async def test_a_silent_listener_is_unknown_not_a_busy_rpc_server() -> None:
    # it never answers the HELLO either, but it keeps accepting connections: its queue is not full
    async with tcp_server(silent) as port:
        found = await fingerprint(LOOPBACK, port, timeout=SILENT_TIMEOUT)
    assert (found.kind, found.state) == ("unknown", "unknown")
    assert found.detail == "open, but answers neither an rpc-server HELLO nor HTTP"


async def test_a_one_client_server_with_a_full_queue_is_a_busy_rpc_server() -> None:
    # what a busy rpc-server looks like to the kernel: backlog 1, its one client elsewhere, nothing accepted
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with socket.create_connection((LOOPBACK, port)):  # the scan's connect, still queued
            pass
        found = await fingerprint(LOOPBACK, port, timeout=SILENT_TIMEOUT)
    assert (found.kind, found.state, found.version) == ("rpc", "busy", None)
    assert found.detail == "accepts no more connections: a coordinator is attached"


async def test_a_port_closed_since_the_scan_is_gone() -> None:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]  # bound, never listening: refuses
        found = await fingerprint(LOOPBACK, port, timeout=TIMEOUT)
    assert (found.kind, found.state) == ("unknown", "gone")


async def test_fingerprint_all_keeps_the_order_and_reports_progress() -> None:
    seen: list[Event] = []
    async with http_server(OLLAMA) as ollama, http_server(LLAMA) as llama, tcp_server(banner) as other:
        targets = [(LOOPBACK, other), (LOOPBACK, llama), (LOOPBACK, ollama)]
        found = await fingerprint_all(targets, timeout=TIMEOUT, concurrency=2, reporter=seen.append)
    assert [(f.port, f.kind) for f in found] == [(other, "unknown"), (llama, "llamacpp"), (ollama, "ollama")]
    progress = [e for e in seen if isinstance(e, StepProgress)]
    assert [(e.completed, e.total) for e in progress] == [(1, 3), (2, 3), (3, 3)]
    assert progress[-1].detail == "2 backends"
