"""The Python API against real llama-server backends (the tiny model): the same greedy text as a request
sent to llama-server directly, from the sync and the async API, and concurrent requests spread over both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sollol_cli.api import AsyncCluster, SyncCluster
from tests.harness.llama import ServerProcess
from tests.real.test_run_llamacpp import PROMPT, direct_greedy, manifest, two_servers

__all__ = ["two_servers"]  # the fixture, used here by name
pytestmark = pytest.mark.real

GREEDY = {"temperature": 0, "seed": 1, "num_predict": 16}
MESSAGES = [{"role": "user", "content": PROMPT}]


def test_sync_chat_gives_llama_servers_greedy_text(two_servers: list[ServerProcess], tmp_path: Path) -> None:
    expected = direct_greedy(two_servers[0], PROMPT, 16)
    assert len(expected.split()) > 3, "the tiny model should produce varied text"
    with SyncCluster(manifest(tmp_path, two_servers)) as cluster:
        answer = cluster.chat("tiny", MESSAGES, options=GREEDY)
        streamed = "".join(
            part.message.content or "" for part in cluster.chat("tiny", MESSAGES, options=GREEDY, stream=True)
        )
    assert answer.message.content == expected
    assert streamed == expected
    assert (answer.done, answer.done_reason, answer.eval_count) == (True, "length", 16)
    assert answer.sollol is not None and answer.sollol.backend in ("ls0", "ls1")


async def test_async_concurrent_chats_over_both_servers(two_servers: list[ServerProcess], tmp_path: Path) -> None:
    expected = direct_greedy(two_servers[1], PROMPT, 16)
    async with AsyncCluster(manifest(tmp_path, two_servers)) as cluster:
        answers = await asyncio.gather(*(cluster.chat("tiny", MESSAGES, options=GREEDY) for _ in range(6)))
    assert [answer.message.content for answer in answers] == [expected] * 6
    assert {answer.sollol.backend for answer in answers if answer.sollol} == {"ls0", "ls1"}
