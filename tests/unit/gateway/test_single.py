"""`dispatch.single`: the one-item stream the gateway routes one-shot calls (embeddings, OpenAI JSON) through."""

from __future__ import annotations

import inspect

from sollol_cli.runtime.dispatch import single


async def answer() -> dict[str, int]:
    return {"n": 1}


async def test_yields_the_result_once() -> None:
    assert [item async for item in single(answer())] == [{"n": 1}]


async def test_closing_before_iterating_closes_the_call() -> None:
    # With filterwarnings=error, a coroutine left un-awaited would fail the test when collected.
    call = answer()
    one = single(call)
    await one.aclose()
    assert inspect.getcoroutinestate(call) == inspect.CORO_CLOSED  # closed, never run
    assert [item async for item in one] == []
