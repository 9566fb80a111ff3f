"""`sollol serve` in the test's own event loop, on a free port, stopped when the block ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sollol_cli.backends.http import close_session
from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings


@contextlib.asynccontextmanager
async def serving(cluster: Cluster, settings: Settings, *, api_key: bytes | None = None) -> AsyncIterator[str]:
    """The gateway's URL while the block runs."""
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            cluster,
            settings,
            ServeOptions("127.0.0.1", 0, api_key=api_key, grace_s=5),
            stop,
            on_listening=listening.set_result,
        )
    )
    try:
        yield (await asyncio.wait_for(listening, 60)).url
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await close_session()
