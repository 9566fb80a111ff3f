"""Send one request to the right backend: route (pure `router.choose`), wait in a bounded queue when every
backend is full, retry elsewhere when a backend fails before the first chunk, and account for in-flight
requests, speed and the circuit breaker of the backend that actually served it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from sollol_cli.backends.base import Backend, BackendUnavailable, Chunk, StreamBroken, UpstreamError
from sollol_cli.errors import BackendError, ModelNotFound, NoHealthyBackend, QueueFull
from sollol_cli.manifest.models import Routing
from sollol_cli.router import (
    NoBackend,
    Picked,
    QueueOutcome,
    RetryAction,
    Unavailable,
    Wait,
    choose,
    queue_decision,
    retry_plan,
    same_model,
)
from sollol_cli.runtime.monitor import BackendView, Monitor

Operation = Literal["chat", "generate"]
T = TypeVar("T")


@dataclass
class Trace:
    """What happened to one request (for stats on stderr, response headers and -v)."""

    model: str
    mode: str = "distribute"
    reason: str = ""
    backend: str | None = None
    attempts: list[str] = field(default_factory=list)  # "backend: error" for each failed attempt
    queued_s: float = 0.0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)  # extra lines for -v (coordinator reuse, placement)


class ShardedModels(Protocol):
    """The sharding coordinators (issue: model sharding). `backend_for` starts or reuses a coordinator."""

    def attach(self, monitor: Monitor) -> None: ...

    def handles(self, model: str) -> tuple[bool, str]: ...

    async def backend_for(self, model: str, trace: Trace) -> Backend: ...

    async def discard(self, model: str, trace: Trace) -> None: ...

    async def release(self, model: str) -> None:
        """A request ended: its keep-alive counts from now."""
        ...


class Dispatcher:
    def __init__(self, monitor: Monitor, routing: Routing, *, sharded: ShardedModels | None = None) -> None:
        self.monitor = monitor
        self.routing = routing
        self.sharded = sharded
        if sharded is not None:
            sharded.attach(monitor)
        self.waiting = 0

    def stream(self, op: Operation, body: dict[str, Any], trace: Trace) -> AsyncIterator[Chunk]:
        return self.stream_call(trace, lambda client: client.chat(body) if op == "chat" else client.generate(body))

    def stream_call(self, trace: Trace, call: Callable[[Backend], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Route any backend call for `trace.model` (chat, generate, embeddings, OpenAI pass-through) with the
        same queue, retries and accounting; a one-shot call is a stream of one item (see `single`)."""
        if self.sharded is None:
            trace.reason = "distribute: the cluster has no rpc backends to shard over"
        else:
            shard, reason = self.sharded.handles(trace.model)
            trace.reason = reason
            if shard:
                trace.mode = "shard"
                return self._sharded(call, trace)
        return self._distributed(call, trace)

    async def _sharded(self, call: Callable[[Backend], AsyncIterator[T]], trace: Trace) -> AsyncIterator[T]:
        """Through the model's coordinator. If it fails before the first chunk (llama-server aborts when an
        rpc-server dies), the coordinator is replaced once on the backends still there; after the first
        chunk the error ends the stream, as everywhere."""
        assert self.sharded is not None
        for attempt in (1, 2):
            backend = await self.sharded.backend_for(trace.model, trace)
            trace.backend = backend.ref.name
            sent_any = False
            try:
                # a coordinator handed out by backend_for has its model loaded: the warm limit applies
                first_byte_s = self.routing.first_byte_timeout
                async for chunk in _timed(call(backend), trace, first_byte_s=first_byte_s, label=backend.ref.label):
                    sent_any = True
                    yield chunk
                return
            except (BackendUnavailable, StreamBroken) as exc:
                if sent_any or attempt == 2:
                    raise
                trace.attempts.append(f"{backend.ref.name}: {exc.message}")
                await self.sharded.discard(trace.model, trace)
            finally:
                if sent_any:
                    await self.sharded.release(trace.model)

    async def _distributed(self, call: Callable[[Backend], AsyncIterator[T]], trace: Trace) -> AsyncIterator[T]:
        tried: set[str] = set()
        failures = 0
        last_error: BackendError | None = None
        while True:
            view = await self._acquire(trace, tried, last_error)
            trace.backend = view.name
            client = view.client
            assert client is not None
            sent_any = False
            ok: bool | None = False
            try:
                first_byte_s = self._first_byte_limit(view, trace.model)
                async for chunk in _timed(call(client), trace, first_byte_s=first_byte_s, label=client.ref.label):
                    sent_any = True
                    yield chunk
                ok = True
                view.speed = view.speed.updated(ttft_s=trace.ttft_s, tokens_per_s=trace.tokens_per_s)
                return
            except (BackendUnavailable, StreamBroken, UpstreamError) as exc:
                if isinstance(exc, UpstreamError) and exc.status < 500 and exc.status != 404:
                    ok = True  # the client's mistake (bad request), not the backend's: no retry, no breaker
                    raise
                failures += 1
                last_error = exc
                tried.add(view.name)
                trace.attempts.append(f"{view.name}: {exc.message}")
                action = retry_plan(failures, self.routing.retries, first_byte_sent=sent_any)
                if action is not RetryAction.retry_elsewhere:
                    raise
            except (GeneratorExit, asyncio.CancelledError):
                ok = None  # the caller went away: neither the backend's success nor its failure
                raise
            finally:
                self.monitor.finished(
                    view, ok=ok, error=None if ok else (str(last_error) if last_error else "cancelled")
                )

    def _first_byte_limit(self, view: BackendView, model: str) -> float:
        """How long the backend may take to its first chunk: a model that is not in its memory has to be
        loaded first (`load_timeout`), a loaded one only evaluates the prompt (`first_byte_timeout`)."""
        warm = any(same_model(name, model) for name in view.loaded)
        return self.routing.first_byte_timeout if warm else self.routing.load_timeout

    async def _acquire(self, trace: Trace, tried: set[str], last_error: BackendError | None) -> BackendView:
        """Pick a backend with a free slot, waiting in the bounded queue while all are busy."""
        queued_at: float | None = None
        ahead = self.waiting
        while True:
            choice = choose(trace.model, self.monitor.candidates(), tried=frozenset(tried))
            if isinstance(choice, Picked):
                view = self.monitor.view(choice.backend)
                self.monitor.started(view)
                if queued_at is not None:
                    trace.queued_s += time.monotonic() - queued_at
                return view
            if isinstance(choice, NoBackend):
                if choice.why is Unavailable.model_unknown:
                    silent = self.monitor.unreachable()
                    if silent and len(silent) == len(self.monitor.candidates()):
                        raise NoHealthyBackend(
                            f"no backend answers ({', '.join(silent)}), so '{trace.model}' cannot run"
                        )
                    if silent:
                        raise ModelNotFound(
                            f"model '{trace.model}' not found on any reachable node; "
                            f"{len(silent)} did not answer: {', '.join(silent)}"
                        )
                    raise ModelNotFound(f"model '{trace.model}' not found on any node", hint="see `sollol status`")
                if choice.why is Unavailable.all_tried and last_error is not None:
                    raise last_error
                raise NoHealthyBackend(choice.reason)
            assert isinstance(choice, Wait)
            if queued_at is None:
                queued_at = time.monotonic()
            verdict = queue_decision(
                trace.model, queued_ahead=ahead, max_queue=self.routing.queue_length,
                waited_s=time.monotonic() - queued_at, max_wait_s=self.routing.queue_wait,
            )  # fmt: skip
            if verdict.outcome is not QueueOutcome.wait:
                raise QueueFull(verdict.message)
            self.waiting += 1
            try:
                await asyncio.wait_for(self.monitor.changed.wait(), timeout=min(verdict.remaining_s, 1.0))
            except TimeoutError:
                pass
            finally:
                self.waiting -= 1
            ahead = 0  # once queued, it competes on equal terms with the others already waiting


class single(Generic[T]):  # lower case: it reads as the function it stands for
    """A one-shot backend call (embed, OpenAI JSON) as a one-item stream, so `stream_call` can route it.
    Its duration is the whole answer, not a time to first token, so `_timed` records none for it."""

    def __init__(self, result: Awaitable[T]) -> None:
        self._result: Awaitable[T] | None = result

    def __aiter__(self) -> single[T]:
        return self

    async def __anext__(self) -> T:
        result, self._result = self._result, None
        if result is None:
            raise StopAsyncIteration
        return await result

    async def aclose(self) -> None:
        result, self._result = self._result, None
        if inspect.iscoroutine(result):
            result.close()  # never started: no "coroutine was never awaited" warning


async def _timed(
    chunks: AsyncIterator[T], trace: Trace, *, first_byte_s: float | None = None, label: str = "the backend"
) -> AsyncIterator[T]:
    """Measure time to first chunk and tokens/s while passing chunks through untouched. A stream whose first
    chunk takes longer than `first_byte_s` is given up as unavailable (nothing was sent, so the dispatcher may
    retry elsewhere): a hung backend must not hold a request for the whole between-chunks `read_timeout`."""
    sent = time.monotonic()
    try:
        if not isinstance(chunks, single):
            try:
                async with asyncio.timeout(first_byte_s) as limit:
                    first = await anext(chunks)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not limit.expired():
                    raise
                raise BackendUnavailable(label, f"sent nothing within {first_byte_s:g}s (first-byte timeout)") from None
            trace.ttft_s = time.monotonic() - sent
            _count_tokens(first, trace)
            yield first
        async for chunk in chunks:
            _count_tokens(chunk, trace)
            yield chunk
    finally:
        closer: Callable[[], Awaitable[None]] | None = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()


def _count_tokens(chunk: object, trace: Trace) -> None:
    if isinstance(chunk, dict) and chunk.get("done"):
        count, duration = chunk.get("eval_count"), chunk.get("eval_duration")
        if isinstance(count, int) and isinstance(duration, int) and duration > 0 and count > 0:
            trace.tokens_per_s = count / duration * 1e9
