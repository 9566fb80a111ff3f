"""`keep_alive` for sharded models: read as Ollama reads it, and the dispatcher's part (an empty request with
keep_alive 0 unloads without starting a coordinator; every request sets how long the coordinator stays)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sollol_cli import events
from sollol_cli.backends.base import BackendRef
from sollol_cli.backends.http import Timeouts
from sollol_cli.manifest.models import Routing
from sollol_cli.runtime.dispatch import Dispatcher, Trace
from sollol_cli.runtime.keep_alive import FOREVER, InvalidKeepAlive, keep_alive_seconds
from sollol_cli.runtime.monitor import Monitor


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        (0.9, 0.0),  # Ollama drops the fraction of a number of seconds
        (300, 300.0),
        (-1, FOREVER),
        (-0.5, FOREVER),
        ("0", 0.0),
        ("0s", 0.0),
        ("-0s", 0.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("+10s", 10.0),
        ("-1", FOREVER),  # Ollama wants a unit in a string; sollol takes a plain number as seconds
        ("600", 600.0),
        ("1.5", 1.5),
        ("-1s", FOREVER),
        ("-5m", FOREVER),
    ],
)
def test_keep_alive_as_ollama_reads_it(value: Any, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["", "1d", "-", ".", "m", "5 m", "five", "1h-5m", True, [1], {"s": 1}, float("nan")])
def test_keep_alive_that_is_no_duration(value: Any) -> None:
    with pytest.raises(InvalidKeepAlive, match="keep_alive"):
        keep_alive_seconds(value)


class Coordinator:
    ref = BackendRef("coordinator:big", "llamacpp", "127.0.0.1", 1)

    async def generate(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        yield {"model": body["model"], "response": "hi", "done": False}
        yield {"model": body["model"], "response": "", "done": True, "done_reason": "stop"}

    chat = generate


class Shards:
    """What the dispatcher asks of the shard manager, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def handles(self, model: str) -> tuple[bool, str]:
        return model == "big", "shard (set in the manifest)"

    async def backend_for(self, model: str, report: events.Reporter) -> Any:  # the part of Backend it needs
        self.calls.append(("backend_for", model))
        return Coordinator()

    async def discard(self, model: str, backend: Any, report: events.Reporter) -> None:
        self.calls.append(("discard", model))

    async def release(
        self, model: str, backend: Any, keep_alive: float | None, tokens_per_s: float | None = None
    ) -> None:
        self.calls.append(("release", model, repr(keep_alive)))

    async def unload(self, model: str) -> None:
        self.calls.append(("unload", model))


def dispatcher() -> tuple[Dispatcher, Shards]:
    shards = Shards()
    return Dispatcher(Monitor([], Timeouts()), Routing(), sharded=shards), shards


@pytest.mark.parametrize(
    ("op", "body", "reply"),
    [
        ("generate", {"model": "big", "keep_alive": 0}, {"response": ""}),
        ("generate", {"model": "big", "prompt": "", "keep_alive": "0s"}, {"response": ""}),
        ("chat", {"model": "big", "messages": [], "keep_alive": 0}, {"message": {"role": "assistant", "content": ""}}),
    ],
)
async def test_an_empty_request_with_keep_alive_0_unloads(op: Any, body: dict[str, Any], reply: dict[str, Any]) -> None:
    dispatch, shards = dispatcher()
    trace = Trace("big")
    [chunk] = [c async for c in dispatch.stream(op, body, trace)]
    assert {k: v for k, v in chunk.items() if k != "created_at"} == {
        "model": "big", **reply, "done": True, "done_reason": "unload"
    }  # fmt: skip
    assert shards.calls == [("unload", "big")]  # no coordinator started to be stopped again
    assert trace.mode == "shard"


@pytest.mark.parametrize(
    ("keep_alive", "released"),
    [(None, "None"), ("10m", "600.0"), (-1, "-1.0"), (0, "0.0")],
)
async def test_a_request_sets_the_keep_alive_it_ends_with(keep_alive: Any, released: str) -> None:
    dispatch, shards = dispatcher()
    body = {"model": "big", "prompt": "hello"} | ({} if keep_alive is None else {"keep_alive": keep_alive})
    chunks = [c async for c in dispatch.stream("generate", body, Trace("big"))]
    assert chunks[-1]["done_reason"] == "stop"
    assert shards.calls == [("backend_for", "big"), ("release", "big", released)]


async def test_an_empty_request_without_keep_alive_0_loads() -> None:
    dispatch, shards = dispatcher()
    [c async for c in dispatch.stream("generate", {"model": "big", "keep_alive": "5m"}, Trace("big"))]
    assert shards.calls == [("backend_for", "big"), ("release", "big", "300.0")]


async def test_a_bad_keep_alive_for_a_sharded_model_is_refused() -> None:
    dispatch, shards = dispatcher()
    with pytest.raises(InvalidKeepAlive, match='keep_alive "soon" is not a duration'):
        dispatch.stream("generate", {"model": "big", "keep_alive": "soon"}, Trace("big"))
    assert shards.calls == []
