"""Backend clients against tiny local upstreams on real sockets: streaming without buffering, error
mapping, cancellation and the shared session."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from sollol_cli.backends import llamacpp
from sollol_cli.backends.base import (
    BackendRef,
    BackendUnavailable,
    StreamBroken,
    Unsupported,
    UpstreamError,
    collect,
)
from sollol_cli.backends.clients import backend_for
from sollol_cli.backends.http import Timeouts, close_session, get_session, request_json
from sollol_cli.backends.llamacpp import LlamaServerBackend, requests_processing
from sollol_cli.backends.ollama import OllamaBackend

Serve = Callable[[web.Application], Awaitable[BackendRef]]


@pytest.fixture(autouse=True)
async def _shared_session() -> AsyncIterator[None]:
    yield
    await close_session()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> BackendRef:
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return BackendRef(name="up", kind="ollama", host="127.0.0.1", port=port, node="n1")

    yield start
    for runner in runners:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def ndjson(request: web.Request, lines: list[dict[str, Any]], delay: float = 0.0) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for line in lines:
        await resp.write(json.dumps(line).encode() + b"\n")
        await asyncio.sleep(delay)
    await resp.write_eof()
    return resp


FINAL = {"model": "m", "created_at": "t", "response": "", "done": True, "done_reason": "stop", "eval_count": 2}


async def test_ollama_chunks_arrive_before_the_upstream_finishes(serve: Serve) -> None:
    finished, go_on = asyncio.Event(), asyncio.Event()

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True  # always streams upstream, even when the client asked for stream: false
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"model":"m","created_at":"t","response":"Hel","done":false}\n')
        await go_on.wait()  # the rest only once the client has the first chunk
        await resp.write(b'{"model":"m","created_at":"t","response":"lo","done":false}\n' + json.dumps(FINAL).encode())
        finished.set()
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/api/generate", generate)
    backend = OllamaBackend(await serve(app))
    stream = backend.generate({"model": "m", "prompt": "hi", "stream": False})
    first = await anext(stream)
    assert first["response"] == "Hel"
    assert not finished.is_set()
    go_on.set()
    rest = [chunk async for chunk in stream]
    assert finished.is_set()
    assert [c["response"] for c in rest] == ["lo", ""]
    assert rest[-1]["done"] is True


async def test_llama_server_events_arrive_before_the_upstream_finishes(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished, go_on = asyncio.Event(), asyncio.Event()
    clock = [10**12]  # sollol's stopwatch, moved only by this test
    monkeypatch.setattr(
        llamacpp, "time", SimpleNamespace(perf_counter=time.perf_counter, perf_counter_ns=lambda: clock[0])
    )
    seen: list[dict[str, Any]] = []

    async def completion(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"content":"Hel","stop":false}\n\n')
        await go_on.wait()  # the rest only once the client has the first event
        # A keep-alive comment, an event split across writes and `data:` without the optional space.
        await resp.write(b':\n\ndata: {"content":"lo",')
        await resp.write(b'"stop":false}\n\ndata:{"content":"","stop":true,"stop_type":"eos",')
        await resp.write(b'"timings":{"prompt_n":3,"prompt_ms":1.0,"predicted_n":2,"predicted_ms":2.0}}\n\n')
        finished.set()
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/completion", completion)
    ref = await serve(app)
    backend = LlamaServerBackend(BackendRef("llama", "llamacpp", ref.host, ref.port), alias="tiny")
    stream = backend.generate({"model": "tiny", "prompt": "hi", "raw": True, "options": {"num_predict": 2}})
    first = await anext(stream)
    assert first["response"] == "Hel"
    assert not finished.is_set()
    clock[0] += 600_000_000  # the request goes on for 0.6 s by sollol's clock before the rest arrives
    go_on.set()
    rest = [chunk async for chunk in stream]
    assert [c["response"] for c in rest] == ["lo", ""]
    final = rest[-1]
    assert final["done_reason"] == "stop"
    assert final["eval_count"] == 2 and final["eval_duration"] == 2_000_000
    assert final["total_duration"] == 600_000_000  # measured by sollol's clock over the whole request
    assert seen == [{"stream": True, "n_predict": 2, "prompt": "hi"}]


async def test_closed_port_is_unavailable_and_names_the_backend() -> None:
    ref = BackendRef(name="gpu1", kind="ollama", host="127.0.0.1", port=free_port())
    backend = OllamaBackend(ref)
    with pytest.raises(BackendUnavailable) as caught:
        await collect(backend.chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
    assert str(caught.value) == f"gpu1 (127.0.0.1:{ref.port}): connection refused"
    status = await backend.probe()
    assert not status.reachable and not status.ready
    assert status.error == f"gpu1 (127.0.0.1:{ref.port}): connection refused"


async def test_error_status_carries_ollamas_message(serve: Serve) -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": "model 'nope' not found"}, status=404)

    app = web.Application()
    app.router.add_post("/api/chat", missing)
    app.router.add_post("/api/show", missing)
    backend = OllamaBackend(await serve(app))
    with pytest.raises(UpstreamError) as caught:
        await anext(backend.chat({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
    assert caught.value.status == 404
    assert caught.value.upstream_message == "model 'nope' not found"
    assert "HTTP 404: model 'nope' not found" in str(caught.value)
    with pytest.raises(UpstreamError, match="not found"):
        await backend.show("nope")


async def test_openai_style_error_bodies_are_understood(serve: Serve) -> None:
    async def fail(request: web.Request) -> web.Response:
        body = {"error": {"code": 400, "message": "'messages' is required", "type": "invalid_request_error"}}
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", fail)
    ref = await serve(app)
    backend = LlamaServerBackend(BackendRef("llama", "llamacpp", ref.host, ref.port), alias="tiny")
    with pytest.raises(UpstreamError) as caught:
        await backend.openai_json("/v1/chat/completions", {})
    assert caught.value.upstream_message == "'messages' is required"
    assert json.loads(caught.value.body)["error"]["code"] == 400  # forwarded unchanged by OpenAI pass-through


async def test_error_line_mid_stream_is_a_broken_stream(serve: Serve) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        chunk = {"model": "m", "created_at": "t", "message": {"role": "assistant", "content": "a"}, "done": False}
        return await ndjson(request, [chunk, {"error": "out of memory"}])

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    backend = OllamaBackend(await serve(app))
    got: list[dict[str, Any]] = []
    with pytest.raises(StreamBroken, match=r"up \(127\.0\.0\.1:\d+\): out of memory"):
        async for chunk in backend.chat({"model": "m", "messages": []}):
            got.append(chunk)
    assert len(got) == 1


async def test_stream_without_final_chunk_is_broken(serve: Serve) -> None:
    async def generate(request: web.Request) -> web.StreamResponse:
        return await ndjson(request, [{"model": "m", "response": "a", "done": False}])

    app = web.Application()
    app.router.add_post("/api/generate", generate)
    backend = OllamaBackend(await serve(app))
    with pytest.raises(StreamBroken, match="before its final chunk"):
        await collect(backend.generate({"model": "m", "prompt": "x"}))


async def test_connection_dropped_mid_stream_is_broken(serve: Serve) -> None:
    got_first = asyncio.Event()

    async def generate(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'{"model":"m","response":"a","done":false}\n')
        await got_first.wait()
        assert request.transport is not None
        request.transport.abort()  # like a backend process that died
        return resp

    app = web.Application()
    app.router.add_post("/api/generate", generate)
    backend = OllamaBackend(await serve(app))
    stream = backend.generate({"model": "m", "prompt": "x"})
    assert (await anext(stream))["response"] == "a"
    got_first.set()
    with pytest.raises(StreamBroken, match="closed the connection in the middle of the response"):
        await anext(stream)


async def test_silent_backend_mid_stream_hits_the_read_timeout(serve: Serve) -> None:
    async def generate(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"model":"m","response":"a","done":false}\n')
        await asyncio.Event().wait()  # silent from now on
        return resp

    app = web.Application()
    app.router.add_post("/api/generate", generate)
    backend = OllamaBackend(await serve(app), Timeouts(connect=1, read=0.3))
    stream = backend.generate({"model": "m", "prompt": "x"})
    await anext(stream)
    with pytest.raises(StreamBroken, match="sent nothing for 0.3s"):
        await anext(stream)


async def test_stopping_early_closes_the_upstream_connection(serve: Serve) -> None:
    upstream_saw_disconnect = asyncio.Event()

    async def generate(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for i in range(200):
                await resp.write(json.dumps({"model": "m", "response": str(i), "done": False}).encode() + b"\n")
                await asyncio.Event().wait()  # no more until the client is gone
        except (ConnectionResetError, asyncio.CancelledError):
            upstream_saw_disconnect.set()
            raise
        return resp

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_post("/api/generate", generate)
    backend = OllamaBackend(await serve(app))
    stream = backend.generate({"model": "m", "prompt": "x"})
    assert (await anext(stream))["response"] == "0"
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()  # what the gateway does when its client goes away
    await asyncio.wait_for(upstream_saw_disconnect.wait(), 3)


async def test_stale_keepalive_connection_is_retried_once() -> None:
    """A server that drops a request without answering (an idle connection closing) gets one retry."""
    attempts = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await reader.readuntil(b"\r\n\r\n")
        if attempts > 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n")
            writer.write(b'{"version":"0.9.0"}\n')
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ref = BackendRef("up", "ollama", "127.0.0.1", port)
    try:
        assert await request_json(ref, "GET", "/api/version", timeout=Timeouts().request()) == {"version": "0.9.0"}
        assert attempts == 2
    finally:
        server.close()
        await server.wait_closed()


async def test_ollama_probe_reads_version_tags_and_ps(serve: Serve) -> None:
    details = {"format": "gguf", "family": "llama", "parameter_size": "7B", "quantization_level": "Q4_0"}
    model = {"name": "tiny:latest", "model": "tiny:latest", "size": 123, "digest": "abc", "details": details}

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.9.1"})

    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"models": [model, {**model, "name": "other:1b", "model": "other:1b"}]})

    async def ps(request: web.Request) -> web.Response:
        return web.json_response({"models": [{**model, "context_length": 4096, "size_vram": 0}]})

    app = web.Application()
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    backend = OllamaBackend(await serve(app))
    status = await backend.probe()
    assert status.reachable and status.ready
    assert status.version == "0.9.1"
    assert status.loaded == ["tiny:latest"]
    assert [m.name for m in status.models] == ["tiny:latest", "other:1b"]
    first = status.models[0]
    assert (first.size, first.digest, first.family, first.parameter_size, first.quantization) == (
        123,
        "abc",
        "llama",
        "7B",
        "Q4_0",
    )
    assert first.context_length == 4096 and status.models[1].context_length is None
    assert status.latency_ms is not None and status.latency_ms >= 0
    assert await backend.tags() == [model, {**model, "name": "other:1b", "model": "other:1b"}]


async def test_probe_that_times_out_reports_instead_of_raising(serve: Serve) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.Event().wait()  # never answers
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/version", slow)
    app.router.add_get("/api/tags", slow)
    app.router.add_get("/api/ps", slow)
    app.router.add_get("/health", slow)
    ref = await serve(app)
    for backend in (
        OllamaBackend(ref, Timeouts(probe=0.3)),
        LlamaServerBackend(BackendRef("l", "llamacpp", ref.host, ref.port), Timeouts(probe=0.3)),
    ):
        status = await asyncio.wait_for(backend.probe(), 2)
        assert not status.reachable
        assert status.error is not None and "0.3s" in status.error


async def test_one_session_per_loop_until_closed() -> None:
    session = get_session()
    assert get_session() is session
    await close_session()
    assert session.closed
    assert get_session() is not session


def test_timeouts_are_validated() -> None:
    with pytest.raises(ValueError, match="connect must be positive"):
        Timeouts(connect=0)
    assert Timeouts(read=None).request().sock_read is None


async def test_backend_kinds_and_unsupported_operations() -> None:
    llama = backend_for(BackendRef("n2", "llamacpp", "127.0.0.1", 1), alias="tiny")
    assert isinstance(llama, LlamaServerBackend)
    assert isinstance(backend_for(BackendRef("n1", "ollama", "127.0.0.1", 1)), OllamaBackend)
    with pytest.raises(Unsupported, match="rpc-server nodes serve no HTTP API"):
        backend_for(BackendRef("n3", "rpc", "127.0.0.1", 1))
    with pytest.raises(Unsupported, match="cannot pull models; put the GGUF on the node"):
        await anext(llama.pull({"model": "x"}))
    with pytest.raises(Unsupported, match="cannot delete"):
        await llama.delete("x")
    with pytest.raises(Unsupported, match="cannot copy"):
        await llama.copy("x", "y")
    with pytest.raises(Unsupported, match="images only through /api/chat"):
        await anext(llama.generate({"model": "tiny", "prompt": "x", "images": ["aGk="]}))


async def test_llama_server_error_event_mid_stream_is_a_broken_stream(serve: Serve) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n')
        await resp.write(b'data: {"error":{"code":500,"message":"slot crashed","type":"server_error"}}\n\n')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    ref = await serve(app)
    backend = LlamaServerBackend(BackendRef("n2", "llamacpp", ref.host, ref.port), alias="tiny")
    stream = backend.chat({"messages": [{"role": "user", "content": "x"}]})
    assert (await anext(stream))["message"]["content"] == "a"
    with pytest.raises(StreamBroken, match=r"^n2 \(127\.0\.0\.1:\d+\): slot crashed$"):
        await anext(stream)


async def test_llama_server_chat_stream_cut_before_finishing_is_broken(serve: Serve) -> None:
    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    ref = await serve(app)
    backend = LlamaServerBackend(BackendRef("n2", "llamacpp", ref.host, ref.port), alias="tiny")
    with pytest.raises(StreamBroken, match="before its final chunk"):
        await collect(backend.chat({"messages": [{"role": "user", "content": "x"}]}))


async def test_empty_prompt_or_messages_answer_like_a_model_load(serve: Serve) -> None:
    ref = await serve(web.Application())  # no routes: nothing may be sent upstream
    backend = LlamaServerBackend(BackendRef("n2", "llamacpp", ref.host, ref.port), alias="tiny")
    generated = await collect(backend.generate({"model": "tiny", "prompt": ""}))
    chatted = await collect(backend.chat({"model": "tiny", "messages": []}))
    assert (generated["response"], generated["done_reason"]) == ("", "load")
    assert (chatted["message"], chatted["done_reason"]) == ({"role": "assistant", "content": ""}, "load")


async def test_llama_server_show_matches_names_by_ollamas_rules(serve: Serve) -> None:
    """Generate accepts `library/tiny` for a llama-server aliased `tiny`; /api/show must accept it too."""

    async def props(request: web.Request) -> web.Response:
        return web.json_response({"model_path": "/models/tiny.gguf", "chat_template": "{{x}}", "total_slots": 1})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "tiny", "meta": {"n_params": 1000, "n_ctx_train": 64}}]})

    app = web.Application()
    app.router.add_get("/props", props)
    app.router.add_get("/v1/models", models)
    ref = await serve(app)
    backend = LlamaServerBackend(BackendRef("n2", "llamacpp", ref.host, ref.port), alias="tiny")
    for name in ("tiny", "Tiny:latest", "library/tiny", "registry.ollama.ai/library/tiny:latest"):
        assert (await backend.show(name))["model_info"]["general.parameter_count"] == 1000, name
    for other in ("tiny:7b", "me/tiny", "tinyllama"):
        with pytest.raises(UpstreamError) as caught:
            await backend.show(other)
        assert (caught.value.status, caught.value.upstream_message) == (404, f"model '{other}' not found")


SLOTS_501 = {
    "error": {"code": 501, "message": "This server does not support slots endpoint.", "type": "not_supported_error"}
}
METRICS = """# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 1
"""


@pytest.mark.parametrize(
    ("slots", "metrics", "in_flight"),
    [
        ([{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}, {"id": 2, "is_processing": True}],
         None, 2),
        ([{"id": 0, "is_processing": False}], METRICS, 0),  # /slots answers: /metrics is not asked
        (None, METRICS, 2),  # --no-slots: the gauge
        (None, None, None),  # --no-slots and no --metrics: unknown
        (None, "llamacpp:prompt_tokens_total 5\n", None),
    ],
    ids=["slots", "slots-first", "metrics-without-slots", "neither", "gauge-missing"],
)  # fmt: skip
async def test_llama_server_probe_reads_requests_in_flight(
    serve: Serve, slots: list[dict[str, Any]] | None, metrics: str | None, in_flight: int | None
) -> None:
    asked: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path == "/props":
            return web.json_response({"model_path": "/m/tiny.gguf", "total_slots": 3})
        if request.path == "/slots":
            return web.json_response(SLOTS_501, status=501) if slots is None else web.json_response(slots)
        if request.path == "/metrics":
            no_metrics = {"error": {"code": 501, "message": "metrics disabled", "type": "not_supported_error"}}
            return web.json_response(no_metrics, status=501) if metrics is None else web.Response(text=metrics)
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "tiny", "meta": {}}]})
        return web.json_response({"status": "ok"})

    app = web.Application()
    for path in ("/health", "/props", "/slots", "/metrics", "/v1/models"):
        app.router.add_get(path, handler)
    ref = await serve(app)
    status = await LlamaServerBackend(BackendRef("l", "llamacpp", ref.host, ref.port)).probe()
    assert status.ready, status.error
    assert (status.slots, status.in_flight) == (3, in_flight)
    assert ("/metrics" in asked) == (slots is None)


@pytest.mark.parametrize(
    ("text", "value"),
    [(METRICS, 2), ("llamacpp:requests_processing 1.000000\n", 1), ("llamacpp:requests_processing NaN\n", None),
     ("llamacpp:requests_processing_total 4\n", None), ("", None), ("llamacpp:requests_processing\n", None)],
)  # fmt: skip
def test_requests_processing_gauge(text: str, value: int | None) -> None:
    assert requests_processing(text) == value
