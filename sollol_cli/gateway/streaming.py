"""Sending what the runtime yields: streamed chunk by chunk the moment each arrives, or collected into one
response. Errors before the first chunk get a proper status; after it, the stream ends with an error
frame (Ollama's last NDJSON line `{"error": ...}`, an OpenAI SSE `data: {"error": {...}}` event, an
Anthropic `event: error` with `{"type": "error", "error": {...}}`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiohttp import web

from sollol_cli.gateway.accesslog import Exchange
from sollol_cli.gateway.problems import JSON_TYPE, Problem, anthropic_error, dumps, error_body, problem_for
from sollol_cli.gateway.state import gateway
from sollol_cli.runtime.dispatch import Trace

T = TypeVar("T")


@dataclass(frozen=True)
class Framing(Generic[T]):
    content_type: str
    encode: Callable[[T], bytes]
    error: Callable[[str], bytes]


def _ndjson_line(chunk: dict[str, Any]) -> bytes:
    return dumps(chunk) + b"\n"


NDJSON: Framing[dict[str, Any]] = Framing(
    "application/x-ndjson", _ndjson_line, lambda message: dumps({"error": message}) + b"\n"
)
# OpenAI pass-through: the backend's SSE bytes go out exactly as they came in.
SSE: Framing[bytes] = Framing(
    "text/event-stream",
    lambda data: data,
    lambda message: b"data: " + dumps(error_body("/v1/", 500, message)) + b"\n\n",
)
# Anthropic pass-through: the backend's own `event:`/`data:` framing, untouched; errors as Anthropic sends them.
ANTHROPIC_SSE: Framing[bytes] = Framing(
    "text/event-stream",
    lambda data: data,
    lambda message: b"event: error\ndata: " + dumps(anthropic_error(500, message)) + b"\n\n",
)


def json_response(data: Any, status: int = 200) -> web.Response:
    response = web.Response(status=status, body=dumps(data))
    response.headers["Content-Type"] = JSON_TYPE
    return response


def identify(response: web.StreamResponse, exchange: Exchange) -> None:
    """Headers naming the backend that served the request and the time the gateway itself added."""
    overhead_ms = exchange.fix_overhead() * 1000
    headers = response.headers
    if exchange.backend:
        headers["X-Sollol-Backend"] = exchange.backend
    headers["X-Sollol-Overhead-Ms"] = f"{overhead_ms:.3f}"
    timing = f"gateway;dur={overhead_ms:.3f}"
    if exchange.queued_s:
        timing += f", queue;dur={exchange.queued_s * 1000:.3f}"
    if exchange.upstream_s:
        timing += f", upstream;dur={exchange.upstream_s * 1000:.3f}"
    headers["Server-Timing"] = timing


def absorb(exchange: Exchange, trace: Trace | None, waited_s: float) -> None:
    """Fold what the runtime measured into the exchange; `waited_s` is the wall time spent in its iterator."""
    if trace is None:
        exchange.upstream_s = exchange.backend_s = waited_s
        return
    exchange.backend = trace.backend
    exchange.mode = trace.mode
    exchange.reason = trace.reason
    exchange.attempts = tuple(trace.attempts)
    exchange.tokens_per_s = trace.tokens_per_s
    exchange.events = tuple(trace.events)
    exchange.queued_s = trace.queued_s
    exchange.ttft_s = trace.ttft_s
    exchange.upstream_s = max(0.0, waited_s - trace.queued_s)
    exchange.backend_s = trace.backend_s


async def _close(iterator: AsyncIterator[Any]) -> None:
    closer: Callable[[], Awaitable[None]] | None = getattr(iterator, "aclose", None)
    if closer is not None:
        await closer()


async def stream(
    request: web.Request,
    exchange: Exchange,
    chunks: AsyncIterator[T],
    framing: Framing[T],
    *,
    trace: Trace | None = None,
    watch: Callable[[T], None] | None = None,
) -> web.StreamResponse:
    """Forward each chunk as soon as it arrives (no buffering); headers go out with the first chunk so that
    failures before it still get their own status code."""
    iterator = aiter(chunks)
    begun = time.perf_counter()
    try:
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            raise Problem(502, f"{(trace and trace.backend) or 'the backend'} sent an empty answer") from None
        finally:
            absorb(exchange, trace, time.perf_counter() - begun)
        response = web.StreamResponse(headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"})
        response.content_type = framing.content_type
        identify(response, exchange)
        exchange.streaming = True
        await response.prepare(request)
        exchange.fix_overhead()  # up to the first byte written (the headers carry it up to just before)
        encode, write = framing.encode, response.write
        if watch is not None:
            watch(first)
        await write(encode(first))
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                gate = gateway(request).gate
                if not gate.was_cut():
                    raise  # the client went away
                assert gate.cut_reason is not None
                exchange.error = gate.cut_reason
                await write(framing.error(gate.cut_reason))
                break
            except Exception as exc:  # after the first byte the status is sent: end with an error frame
                problem = problem_for(exc)
                exchange.error = problem.message
                await write(framing.error(problem.message))
                break
            if watch is not None:
                watch(chunk)
            await write(encode(chunk))
        await response.write_eof()
        return response
    finally:
        exchange.upstream_s = max(0.0, time.perf_counter() - begun - exchange.queued_s)
        if trace is not None:
            exchange.tokens_per_s = trace.tokens_per_s  # known only at the last chunk
        await _close(iterator)


async def collect(exchange: Exchange, chunks: AsyncIterator[T], *, trace: Trace | None = None) -> list[T]:
    """Everything a backend sends, for a `"stream": false` answer."""
    iterator = aiter(chunks)
    begun = time.perf_counter()
    try:
        return [chunk async for chunk in iterator]
    finally:
        absorb(exchange, trace, time.perf_counter() - begun)
        await _close(iterator)
