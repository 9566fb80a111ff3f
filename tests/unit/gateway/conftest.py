"""A gateway on a real socket in front of fake Ollamas: `gateway(*fakes, slots=..., **options)`."""

from __future__ import annotations

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
from tests.unit.gateway.fakes import FakeOllama


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


def cluster_of(fakes: list[FakeOllama], *, slots: int = 2, **extra: Any) -> Cluster:
    nodes = [
        {
            "name": fake.name,
            "address": "127.0.0.1",
            "transport": "local",
            "ollama": {
                "port": fake.port,
                "environment": {"OLLAMA_NUM_PARALLEL": str(slots)},
                "models": fake.models[:1],
            },
        }
        for fake in fakes
    ]
    return Cluster.model_validate({"name": "test", "nodes": nodes, **extra})


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway() -> AsyncIterator[MakeGateway]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(
        *fakes: FakeOllama, slots: int = 2, api_key: bytes | None = None, log_format: str = "json", **extra: Any
    ) -> Gateway:
        for fake in fakes:
            if fake.runner is None:
                await fake.start()
                cleanups.append(fake.stop)
        opened = AsyncExitStack()
        runtime = await opened.enter_async_context(
            open_cluster(cluster_of(list(fakes), slots=slots, **extra), Settings())
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
