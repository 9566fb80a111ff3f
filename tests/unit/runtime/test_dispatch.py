"""The dispatcher with in-memory backends: routing, queueing, retries, accounting (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sollol_cli.backends.base import (
    BackendRef,
    BackendStatus,
    BackendUnavailable,
    ModelEntry,
    StreamBroken,
    UpstreamError,
)
from sollol_cli.backends.http import Timeouts
from sollol_cli.errors import ModelNotFound, NoHealthyBackend, QueueFull
from sollol_cli.health import ProbeState
from sollol_cli.manifest.models import Routing
from sollol_cli.names import normalize_model_name
from sollol_cli.router import SpeedEstimate
from sollol_cli.runtime.dispatch import Dispatcher, Trace
from sollol_cli.runtime.inventory import BackendSpec
from sollol_cli.runtime.monitor import Monitor, others_in_flight
from tests.harness.rng import NameOrder


class FakeBackend:
    def __init__(self, name: str, *, tokens: int = 3, fail: str | None = None, fail_after: int = 0):
        self.ref = BackendRef(name, "ollama", "127.0.0.1", 1)
        self.tokens, self.fail, self.fail_after = tokens, fail, fail_after
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.streaming = asyncio.Event()  # set once a stream is under way
        self.gate: asyncio.Event | None = None  # when set up, every token waits for it
        self.reported_in_flight: int | None = None  # what its probe says is running (llama-server's /slots)

    async def probe(self) -> BackendStatus:
        return BackendStatus(True, "0.0.0", [ModelEntry("tiny:latest")], slots=2, in_flight=self.reported_in_flight)

    async def generate(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            for i in range(self.tokens):
                if self.fail and i == self.fail_after:
                    if self.fail == "unavailable":
                        raise BackendUnavailable(self.ref.label, "connection refused")  # as the real clients
                    if self.fail == "500":
                        raise UpstreamError(self.ref.label, 500, "boom")
                    if self.fail == "400":
                        raise UpstreamError(self.ref.label, 400, "bad request")
                    raise StreamBroken(self.ref.label, "connection dropped")
                await asyncio.sleep(0)
                self.streaming.set()
                if self.gate is not None:
                    await self.gate.wait()
                yield {"model": body["model"], "response": f"{self.ref.name}-{i} ", "done": False}
            yield {
                "model": body["model"],
                "response": "",
                "done": True,
                "eval_count": self.tokens,
                "eval_duration": 10**9,
            }
        finally:
            self.active -= 1

    chat = generate


def runtime(*backends: FakeBackend, slots: int = 1, **routing: Any) -> tuple[Dispatcher, Monitor]:
    specs = [BackendSpec(b.ref, slots_hint=slots) for b in backends]
    monitor = Monitor(specs, Timeouts())
    for backend in backends:
        view = monitor.view(backend.ref.name)
        view.client = backend  # type: ignore[assignment]
        view.status = BackendStatus(True, "0.0.0", [ModelEntry("tiny:latest")])
        view.models = frozenset({"tiny:latest"})  # as a successful probe records them
        view.probe = ProbeState(True, 0, 1e18)
    return Dispatcher(monitor, Routing(**routing), rng=NameOrder()), monitor


async def collect(dispatcher: Dispatcher, model: str = "tiny") -> tuple[list[dict[str, Any]], Trace]:
    trace = Trace(model)
    chunks = [c async for c in dispatcher.stream("generate", {"model": model, "prompt": "hi"}, trace)]
    return chunks, trace


async def test_streams_from_a_backend_with_the_model() -> None:
    a = FakeBackend("a")
    dispatcher, monitor = runtime(a)
    chunks, trace = await collect(dispatcher)
    assert [c["response"] for c in chunks] == ["a-0 ", "a-1 ", "a-2 ", ""]
    assert trace.backend == "a"
    assert trace.tokens_per_s == pytest.approx(3.0)
    assert monitor.view("a").in_flight == 0
    assert monitor.view("a").served == 1


async def test_unknown_model() -> None:
    dispatcher, _ = runtime(FakeBackend("a"))
    with pytest.raises(ModelNotFound, match="model 'other' not found on any node"):
        await collect(dispatcher, "other")


async def test_retry_before_first_byte_goes_elsewhere() -> None:
    a, b = FakeBackend("a", fail="unavailable"), FakeBackend("b")
    dispatcher, monitor = runtime(a, b)
    chunks, trace = await collect(dispatcher)
    assert chunks[0]["response"] == "b-0 "
    assert trace.attempts == ["a (127.0.0.1:1): connection refused"]  # the backend named once
    assert monitor.view("a").breaker.failures == 1


async def test_5xx_before_first_byte_retries() -> None:
    dispatcher, _ = runtime(FakeBackend("a", fail="500"), FakeBackend("b"))
    chunks, trace = await collect(dispatcher)
    assert trace.backend == "b"


async def test_client_error_is_not_retried() -> None:
    a, b = FakeBackend("a", fail="400"), FakeBackend("b")
    dispatcher, monitor = runtime(a, b)
    with pytest.raises(UpstreamError):
        await collect(dispatcher)
    assert b.calls == 0
    assert monitor.view("a").breaker.failures == 0


async def test_failure_after_first_byte_is_raised_not_retried() -> None:
    a, b = FakeBackend("a", fail="broken", fail_after=2), FakeBackend("b")
    dispatcher, _ = runtime(a, b)
    got: list[str] = []
    with pytest.raises(StreamBroken):
        async for chunk in dispatcher.stream("generate", {"model": "tiny"}, Trace("tiny")):
            got.append(chunk["response"])
    assert got == ["a-0 ", "a-1 "]
    assert b.calls == 0


async def test_retries_are_bounded() -> None:
    backends = [FakeBackend(n, fail="unavailable") for n in "abcd"]
    dispatcher, _ = runtime(*backends, retries=2)
    with pytest.raises(BackendUnavailable):
        await collect(dispatcher)
    assert sum(b.calls for b in backends) == 3


async def yielded_until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds (in memory: no clock, a bounded number of turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    pytest.fail("the condition never held")


async def test_never_more_than_slots_and_queue_drains() -> None:
    a, b = FakeBackend("a"), FakeBackend("b")
    a.gate = b.gate = gate = asyncio.Event()
    dispatcher, _ = runtime(a, b, slots=2)
    requests = asyncio.gather(*(collect(dispatcher) for _ in range(12)))
    await yielded_until(lambda: dispatcher.waiting == 8)
    assert (a.active, b.active) == (2, 2)  # every slot taken, the rest wait in the queue
    gate.set()
    results = await requests
    assert all(len(chunks) == 4 for chunks, _ in results)
    assert a.max_active <= 2 and b.max_active <= 2
    assert a.calls + b.calls == 12


async def test_queue_full_is_a_clear_error() -> None:
    a = FakeBackend("a")
    a.gate = asyncio.Event()  # the first request holds the one slot until the third was refused
    dispatcher, _ = runtime(a, slots=1, queue_length=1, queue_wait=5)
    running = asyncio.create_task(collect(dispatcher))
    await a.streaming.wait()
    queued = asyncio.create_task(collect(dispatcher))
    await yielded_until(lambda: dispatcher.waiting == 1)
    refused = await asyncio.gather(collect(dispatcher), return_exceptions=True)
    a.gate.set()
    outcomes = [*refused, *await asyncio.gather(running, queued, return_exceptions=True)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], QueueFull)
    assert "requests are already waiting" in str(errors[0])


async def test_queue_wait_expires() -> None:
    a = FakeBackend("a")
    a.gate = asyncio.Event()  # the slot stays taken until the queued request gave up
    dispatcher, _ = runtime(a, slots=1, queue_length=5, queue_wait=0.1)
    running = asyncio.create_task(collect(dispatcher))
    await a.streaming.wait()
    expired = (await asyncio.gather(collect(dispatcher), return_exceptions=True))[0]
    assert isinstance(expired, QueueFull) and "within 0.1 s" in str(expired)
    a.gate.set()
    chunks, _ = await running
    assert chunks[-1]["done"]


async def test_one_failed_probe_keeps_the_known_models() -> None:
    a = FakeBackend("a")
    dispatcher, monitor = runtime(a)
    view = monitor.view("a")
    view.status = BackendStatus(False, error="timed out")  # one failed probe; still healthy until taken out
    chunks, trace = await collect(dispatcher)
    assert trace.backend == "a" and chunks[-1]["done"]


async def test_load_a_backend_reports_steers_requests_away() -> None:
    """Other clients' requests a backend reports (llama-server's /slots) count against it: with `a` busy
    for someone else, `b` serves, though equal backends would otherwise be taken in name order here."""
    a, b = FakeBackend("a"), FakeBackend("b")
    dispatcher, monitor = runtime(a, b, slots=2)
    a.reported_in_flight = 2
    await monitor.probe_all()
    assert [(c.name, c.in_flight, c.others_in_flight) for c in monitor.candidates()] == [("a", 0, 2), ("b", 0, 0)]
    _, trace = await collect(dispatcher)
    assert trace.backend == "b" and a.calls == 0


async def test_own_requests_are_not_counted_twice() -> None:
    """A probe that sees this process's own request in flight does not take it for another client's."""
    a = FakeBackend("a", tokens=3)
    a.gate = asyncio.Event()
    dispatcher, monitor = runtime(a, slots=2)
    running = asyncio.create_task(collect(dispatcher))
    await a.streaming.wait()
    a.reported_in_flight = 1  # ours
    await monitor.probe_all()
    view = monitor.view("a")
    assert (view.in_flight, view.others_in_flight) == (1, 0)
    a.gate.set()
    await running
    assert monitor.candidates()[0].load == 0


@pytest.mark.parametrize(
    ("reported", "own", "others"),
    [(None, 0, 0), (None, 2, 0), (0, 0, 0), (3, 0, 3), (3, 1, 2), (1, 2, 0)],
)
def test_others_in_flight(reported: int | None, own: int, others: int) -> None:
    assert others_in_flight(reported, own) == others


async def test_unhealthy_only() -> None:
    dispatcher, monitor = runtime(FakeBackend("a"))
    monitor.view("a").probe = ProbeState(False, 3, 1e18)
    with pytest.raises(NoHealthyBackend, match="node a has 'tiny' but none is healthy"):
        await collect(dispatcher)


async def test_cancelled_request_frees_its_slot() -> None:
    a = FakeBackend("a", tokens=5)
    a.gate = asyncio.Event()  # never set: the stream stays in flight until the task is cancelled
    dispatcher, monitor = runtime(a)

    async def consume() -> None:
        async for _ in dispatcher.stream("generate", {"model": "tiny"}, Trace("tiny")):
            pass

    task = asyncio.create_task(consume())
    await a.streaming.wait()
    assert monitor.view("a").in_flight == 1 and a.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert monitor.view("a").in_flight == 0
    assert a.active == 0


async def test_cancelled_request_is_not_a_backend_failure() -> None:
    a = FakeBackend("a", tokens=5)
    dispatcher, monitor = runtime(a)
    stream = dispatcher.stream("generate", {"model": "tiny"}, Trace("tiny"))
    await stream.__anext__()
    await stream.aclose()  # type: ignore[attr-defined]
    assert monitor.view("a").in_flight == 0
    assert monitor.view("a").breaker.failures == 0


class ReplanningShards:
    """A sharded model whose first coordinator fails before its first byte: the dispatcher discards it and
    gets another, planned on the rpc backends still there (and decided again, with a new reason)."""

    def __init__(self) -> None:
        self.coordinators = [FakeBackend("coordinator-1", fail="unavailable"), FakeBackend("coordinator-2")]
        self.discarded = 0

    def handles(self, model: str) -> tuple[bool, str]:
        return True, ["shard: 2 rpc backends", "shard: 1 rpc backend"][self.discarded]

    async def backend_for(self, model: str, report: Any) -> FakeBackend:
        return self.coordinators[self.discarded]

    async def discard(self, model: str, backend: Any, report: Any) -> None:
        self.discarded += 1

    async def release(
        self, model: str, backend: Any, keep_alive: float | None, tokens_per_s: float | None = None
    ) -> None:
        pass

    async def unload(self, model: str) -> None:
        pass


async def test_a_replanned_sharded_request_says_why_from_the_new_plan() -> None:
    dispatcher, _ = runtime(FakeBackend("a"))
    dispatcher.sharded = ReplanningShards()  # type: ignore[assignment]
    chunks, trace = await collect(dispatcher)
    assert chunks[0]["response"] == "coordinator-2-0 "
    assert (trace.mode, trace.backend, trace.reason) == ("shard", "coordinator-2", "shard: 1 rpc backend")
    assert trace.attempts == ["coordinator-1 (127.0.0.1:1): connection refused"]


async def test_speeds_bench_saved_steer_a_process_that_has_measured_nothing_yet() -> None:
    """`a` comes first by name, but bench measured `b` faster with this model: `b` serves. Once this process
    has measured `b` itself (3 tokens/s), its own figure wins over the saved 90, and `a` (saved 10) serves."""
    a, b = FakeBackend("a"), FakeBackend("b")
    dispatcher, monitor = runtime(a, b)
    key = normalize_model_name("tiny")
    monitor.measured = {(key, "a"): SpeedEstimate(0.5, 10.0), (key, "b"): SpeedEstimate(0.1, 90.0)}
    assert [(c.name, c.tokens_per_s) for c in monitor.candidates(model="tiny")] == [("a", 10.0), ("b", 90.0)]
    assert [(c.name, c.tokens_per_s) for c in monitor.candidates(model="other")] == [("a", None), ("b", None)]
    _, trace = await collect(dispatcher)
    assert trace.backend == "b" and a.calls == 0
    assert monitor.view("b").speed.tokens_per_s == pytest.approx(3.0)  # measured by this process: 3 tokens in 1 s
    assert [c.tokens_per_s for c in monitor.candidates(model="tiny")] == [10.0, pytest.approx(3.0)]
    _, trace = await collect(dispatcher)
    assert trace.backend == "a"
