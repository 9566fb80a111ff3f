"""Send one request to the right backend: route (pure `router.choose`), wait in a bounded queue when every
backend is full, retry elsewhere when a backend fails before the first chunk, and account for in-flight
requests, speed and the circuit breaker of the backend that actually served it."""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from sollol_cli.backends import translate
from sollol_cli.backends.base import Backend, BackendUnavailable, Chunk, StreamBroken, Unsupported, UpstreamError
from sollol_cli.errors import BackendError, ModelNotFound, NoHealthyBackend, QueueFull
from sollol_cli.events import Event, Reporter
from sollol_cli.health import Answer, judge_answer
from sollol_cli.manifest.models import Routing
from sollol_cli.names import same_model
from sollol_cli.router import (
    NoBackend,
    Picked,
    QueueOutcome,
    RetryAction,
    Unavailable,
    choose,
    queue_decision,
    retry_plan,
)
from sollol_cli.runtime.keep_alive import keep_alive_seconds
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
    attempts: list[str] = field(default_factory=list)  # each failed attempt's error, naming its backend
    queued_s: float = 0.0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    # time spent awaiting backends' chunks (the request sent, each chunk read and parsed), every attempt's
    backend_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)  # what the coordinator did (shown by -v)


class ShardedModels(Protocol):
    """The sharding coordinators (sharding.manager.ShardManager). `backend_for` starts or reuses one."""

    def handles(self, model: str) -> tuple[bool, str]: ...

    async def backend_for(self, model: str, report: Reporter) -> Backend: ...

    async def discard(self, model: str, backend: Backend, report: Reporter) -> None:
        """`backend`, handed out by `backend_for`, failed before its first byte: stop it if still current."""
        ...

    async def release(
        self, model: str, backend: Backend, keep_alive: float | None, tokens_per_s: float | None = None
    ) -> None:
        """A request to `backend` ended: its keep-alive (seconds, negative for ever, None: the default)
        counts from now. `tokens_per_s`: the request's decode speed, when the backend reported it."""
        ...

    async def unload(self, model: str) -> None:
        """`keep_alive: 0` with nothing to generate: stop the model's coordinator."""
        ...


class Dispatcher:
    def __init__(
        self,
        monitor: Monitor,
        routing: Routing,
        *,
        sharded: ShardedModels | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.monitor = monitor
        self.routing = routing
        self.sharded = sharded
        self.rng = rng or random.Random()  # decides among equally good backends (see router.choose)
        self.waiting_by_model: Counter[str] = Counter()  # requests in the queue now, per model as requested

    @property
    def waiting(self) -> int:
        """Requests in the queue now, all models."""
        return sum(self.waiting_by_model.values())

    def stream(self, op: Operation, body: dict[str, Any], trace: Trace) -> AsyncIterator[Chunk]:
        unload = _unload_reply(op, body)
        return self.stream_call(
            trace,
            lambda client: client.chat(body) if op == "chat" else client.generate(body),
            keep_alive=body.get("keep_alive"),
            unload=unload,
        )

    def embed(self, body: dict[str, Any], trace: Trace) -> AsyncIterator[dict[str, Any]]:
        """Ollama's /api/embed through the router: one item, the backend's answer."""
        return self.stream_call(trace, lambda backend: single(backend.embed(body)))

    def stream_call(
        self,
        trace: Trace,
        call: Callable[[Backend], AsyncIterator[T]],
        *,
        keep_alive: Any = None,
        unload: T | None = None,
    ) -> AsyncIterator[T]:
        """Route any backend call for `trace.model` (chat, generate, embeddings, OpenAI pass-through) with the
        same queue, retries and accounting; a one-shot call is a stream of one item (see `single`).

        `keep_alive` is the request's own (Ollama's field); backends that load models themselves read it from
        the request, a sharded model's coordinator is kept for it. `unload` is the answer to a request that
        only asks to load or unload the model (no prompt): with keep_alive 0 the coordinator is stopped."""
        if self.sharded is None:
            trace.reason = "distribute: the cluster has no rpc backends to shard over"
        else:
            shard, reason = self.sharded.handles(trace.model)
            trace.reason = reason
            if shard:
                trace.mode = "shard"
                seconds = keep_alive_seconds(keep_alive)
                if unload is not None and seconds == 0:
                    return self._unload(trace, unload)
                return self._sharded(call, trace, seconds)
        return self._distributed(call, trace)

    async def _unload(self, trace: Trace, reply: T) -> AsyncIterator[T]:
        assert self.sharded is not None
        await self.sharded.unload(trace.model)
        yield reply

    async def _sharded(
        self, call: Callable[[Backend], AsyncIterator[T]], trace: Trace, keep_alive: float | None
    ) -> AsyncIterator[T]:
        """Through the model's coordinator. If it fails before the first chunk (llama-server aborts when an
        rpc-server dies), the coordinator is replaced once on the backends still there; after the first
        chunk the error ends the stream, as everywhere."""
        assert self.sharded is not None
        for attempt in (1, 2):
            backend = await self.sharded.backend_for(trace.model, trace.events.append)
            trace.backend = backend.ref.name
            if attempt == 2:  # re-planned on the rpc backends still there: say why from what they are now
                trace.reason = self.sharded.handles(trace.model)[1]
            sent_any = False
            try:
                # a coordinator handed out by backend_for has its model loaded: the warm limit applies
                first_byte_s = self.routing.first_byte_timeout
                async for chunk in timed(call(backend), trace, first_byte_s=first_byte_s, label=backend.ref.label):
                    sent_any = True
                    yield chunk
                return
            except (BackendUnavailable, StreamBroken) as exc:
                if sent_any or attempt == 2:
                    raise
                trace.attempts.append(exc.message)
                await self.sharded.discard(trace.model, backend, trace.events.append)
            finally:
                if sent_any:
                    await self.sharded.release(trace.model, backend, keep_alive, trace.tokens_per_s)

    async def _distributed(self, call: Callable[[Backend], AsyncIterator[T]], trace: Trace) -> AsyncIterator[T]:
        """Only a broken backend (no answer, a broken stream, a 5xx that means the server failed) counts
        against its breaker. A backend that lacks the model, route or feature (404, 501) or is busy loading
        (503) is no failure: the request goes to another backend that has the model, or waits for the busy
        one, and if none can serve it the caller gets that answer with its status."""
        attempts = _Attempts()
        while True:
            view = await self._acquire(trace, attempts)
            trace.backend = view.name
            client = view.client
            assert client is not None
            sent_any = False
            ok: bool | None = None  # neither success nor failure unless decided below
            try:
                first_byte_s = self._first_byte_limit(view, trace.model)
                async for chunk in timed(call(client), trace, first_byte_s=first_byte_s, label=client.ref.label):
                    sent_any = True
                    yield chunk
                ok = True
                view.speed = view.speed.updated(ttft_s=trace.ttft_s, tokens_per_s=trace.tokens_per_s)
                return
            except (BackendUnavailable, StreamBroken, UpstreamError) as exc:
                answer = _judge(exc)
                ok = _COUNTS_AS[answer]
                if answer is Answer.refused:
                    raise  # the client's mistake (bad request), not the backend's: no retry
                attempts.last_error = exc
                attempts.tried.add(view.name)
                trace.attempts.append(exc.message)
                if answer is Answer.busy:
                    attempts.busy.add(view.name)
                    attempts.busy_since = attempts.busy_since or time.monotonic()
                if answer is Answer.broken:
                    attempts.failures += 1
                    action = retry_plan(attempts.failures, self.routing.retries, first_byte_sent=sent_any)
                    if action is not RetryAction.retry_elsewhere:
                        raise
            except Unsupported:
                ok = True  # this kind of backend cannot do it (e.g. images on llama-server /api/generate)
                raise
            except (GeneratorExit, asyncio.CancelledError):
                ok = None  # the caller went away: neither the backend's success nor its failure
                raise
            finally:
                error = attempts.last_error
                self.monitor.finished(view, ok=ok, error=str(error) if error else None)

    def _first_byte_limit(self, view: BackendView, model: str) -> float:
        """How long the backend may take to its first chunk: a model that is not in its memory has to be
        loaded first (`load_timeout`), a loaded one only evaluates the prompt (`first_byte_timeout`)."""
        warm = any(same_model(name, model) for name in view.loaded)
        return self.routing.first_byte_timeout if warm else self.routing.load_timeout

    async def _acquire(self, trace: Trace, attempts: _Attempts) -> BackendView:
        """Pick a backend with a free slot, waiting in the bounded queue while all are full, or while the
        only ones left answered busy (they are tried again after the next probe or finished request; the
        wait for them counts from their first busy answer)."""
        started: float | None = None
        ahead = self.waiting
        while True:
            tried = frozenset(attempts.tried)
            choice = choose(
                trace.model, self.monitor.candidates(model=trace.model), random=self.rng.random, tried=tried
            )
            if isinstance(choice, Picked):
                view = self.monitor.view(choice.backend)
                self.monitor.started(view)
                if started is not None:
                    trace.queued_s += time.monotonic() - started
                return view
            if isinstance(choice, NoBackend):
                if choice.why is Unavailable.model_unknown:
                    raise model_unknown(self.monitor, trace.model)
                if not attempts.busy:
                    if choice.why is Unavailable.all_tried and attempts.last_error is not None:
                        raise attempts.last_error
                    raise NoHealthyBackend(choice.reason)
            now = time.monotonic()
            started = started if started is not None else now
            queued_at = attempts.busy_since if attempts.busy and attempts.busy_since is not None else started
            verdict = queue_decision(
                trace.model, queued_ahead=ahead, max_queue=self.routing.queue_length,
                waited_s=now - queued_at, max_wait_s=self.routing.queue_wait,
            )  # fmt: skip
            if verdict.outcome is not QueueOutcome.wait:
                if attempts.busy and attempts.last_error is not None:
                    raise attempts.last_error  # still busy after the whole wait: its own 503 ("Loading model")
                raise QueueFull(verdict.message)
            self.waiting_by_model[trace.model] += 1
            try:
                await asyncio.wait_for(self.monitor.changed.wait(), timeout=min(verdict.remaining_s, 1.0))
            except TimeoutError:
                pass
            finally:
                self.waiting_by_model[trace.model] -= 1
                if not self.waiting_by_model[trace.model]:
                    del self.waiting_by_model[trace.model]
            attempts.tried.difference_update(attempts.busy)  # the busy ones get another chance after a wait
            attempts.busy.clear()
            ahead = 0  # once queued, it competes on equal terms with the others already waiting


def _unload_reply(op: Operation, body: dict[str, Any]) -> Chunk | None:
    """Ollama's answer to a request with nothing to generate and keep_alive 0 (`ollama stop`); None when the
    request has something to generate."""
    model = str(body.get("model") or "")
    if op == "chat":
        if body.get("messages"):
            return None
        done: Chunk = {"message": {"role": "assistant", "content": ""}}
    else:
        if body.get("prompt") or body.get("suffix"):
            return None
        done = {"response": ""}
    return {"model": model, "created_at": translate.now_rfc3339(), **done, "done": True, "done_reason": "unload"}


@dataclass
class _Attempts:
    """What the attempts at one request met so far."""

    tried: set[str] = field(default_factory=set)  # backends not to ask again
    busy: set[str] = field(default_factory=set)  # tried ones that were busy: asked again after a wait
    busy_since: float | None = None  # the first busy answer
    failures: int = 0  # broken backends (the retry budget)
    last_error: BackendError | None = None


# How each kind of answer counts for the backend's breaker: success, neither (only the slot is freed), failure.
_COUNTS_AS: dict[Answer, bool | None] = {
    Answer.refused: True, Answer.elsewhere: True, Answer.busy: None, Answer.broken: False,
}  # fmt: skip


def _judge(exc: BackendError) -> Answer:
    if isinstance(exc, UpstreamError):
        return judge_answer(exc.status, exc.upstream_message, exc.kind)
    return Answer.broken  # no answer at all, or a stream that broke


class single(Generic[T]):  # lower case: it reads as the function it stands for
    """A one-shot backend call (embed, OpenAI JSON) as a one-item stream, so `stream_call` can route it.
    Its duration is the whole answer, not a time to first token, so `timed` records none for it."""

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


def model_unknown(monitor: Monitor, model: str) -> BackendError:
    """No reachable backend lists `model`: every backend silent (exit 4: try again later), or the model absent
    from those that answered (naming the silent ones, whose models are unknown)."""
    silent = monitor.unreachable()
    if silent and len(silent) == len(monitor.candidates()):
        return NoHealthyBackend(f"no backend answers ({', '.join(silent)}), so '{model}' cannot run")
    if silent:
        return ModelNotFound(
            f"model '{model}' not found on any reachable node; {len(silent)} did not answer: {', '.join(silent)}"
        )
    return ModelNotFound(f"model '{model}' not found on any node", hint="see `sollol status`")


async def timed(
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
            trace.backend_s += trace.ttft_s
            _count_tokens(first, trace)
            yield first
        while True:
            asked = time.monotonic()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                trace.backend_s += time.monotonic() - asked
                return
            trace.backend_s += time.monotonic() - asked
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
