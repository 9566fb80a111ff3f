"""A gateway on a real socket in front of Ollama stand-ins (tests/standin): `gateway(*standins, slots=...)`,
with the stand-ins made by `standin(name, **config)`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sollol_cli.backends.http import close_session
from sollol_cli.gateway.app import create_app
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.session import ClusterRuntime, open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinFactory, StandinHandle
from tests.harness.rng import NameOrder
from tests.standin.ollama_standin import answer_tokens

FAST = 2000.0  # tokens per second of the stand-ins here: tests wait for states, never for the clock


@dataclass
class Gateway:
    url: str
    app: web.Application
    runtime: ClusterRuntime
    session: aiohttp.ClientSession
    log: list[str] = field(default_factory=list)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> aiohttp.ClientResponse:
        if body is not None:
            kwargs["json"] = body
        return await self.session.post(self.url + path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.session.get(self.url + path, **kwargs)


MakeStandin = Callable[..., StandinHandle]


@pytest.fixture
def standin(ollama_standin: StandinFactory) -> MakeStandin:
    """`standin(name, **config)`: an Ollama stand-in named `name` (its answers start with `<name>`)."""

    def make(name: str, **config: Any) -> StandinHandle:
        return ollama_standin({"name": name, "tokens_per_second": FAST, **config})

    return make


def answer(standin: StandinHandle, text: str, count: int, *, model: str = "tiny:latest", seed: int = 0) -> list[str]:
    """The tokens `standin` answers to `text` (the prompt, or the chat rendered as "role: content" lines)."""
    return answer_tokens(standin.name, model, text, seed, count)


def cluster_of(
    standins: list[StandinHandle], *, slots: int = 2, assign: list[str] | None = None, **extra: Any
) -> Cluster:
    """Each stand-in a node; the manifest assigns it `assign`, or its first model."""
    nodes = [
        {
            "name": s.name,
            "address": "127.0.0.1",
            "transport": "local",
            "ollama": {
                "port": s.port,
                "environment": {"OLLAMA_NUM_PARALLEL": str(slots)},
                "models": assign if assign is not None else [m.name for m in s.config.models[:1]],
            },
        }
        for s in standins
    ]
    return Cluster.model_validate({"name": "test", "nodes": nodes, **extra})


async def until(condition: Callable[[], bool], what: str = "the expected state") -> None:
    """Wait until `condition` holds: a state of the gateway or of a stand-in, looked at again and again (the
    gateway runs on this loop, so each look lets it go on). Fails after a generous bound, never asserts one."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"never reached {what}")


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway() -> AsyncIterator[MakeGateway]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(
        *standins: StandinHandle,
        slots: int = 2,
        assign: list[str] | None = None,
        api_key: bytes | None = None,
        log_format: str = "json",
        **extra: Any,
    ) -> Gateway:
        opened = AsyncExitStack()
        runtime = await opened.enter_async_context(
            open_cluster(cluster_of(list(standins), slots=slots, assign=assign, **extra), Settings(), rng=NameOrder())
        )
        lines: list[str] = []
        app = create_app(runtime, api_key=api_key, log=lines.append, log_format=log_format, health_loop=False)  # type: ignore[arg-type]
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        session = aiohttp.ClientSession()
        port = runner.addresses[0][1]

        async def cleanup() -> None:
            await session.close()
            await runner.cleanup()
            await opened.aclose()

        cleanups.append(cleanup)
        return Gateway(f"http://127.0.0.1:{port}", app, runtime, session, lines)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()
    await close_session()
