"""Sharded models in the listings: /api/tags and /api/show from the GGUF, /api/ps naming the coordinator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sollol_cli.backends.http import close_session
from sollol_cli.gateway.app import create_app
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.manager import ShardManager
from sollol_cli.ssh.nodeproc import process_start_time
from tests.harness.models import write_gguf
from tests.harness.ollama import StandinFactory


@pytest.fixture
async def gateway_with_shards(
    tmp_path: Path, ollama_standin: StandinFactory
) -> AsyncIterator[tuple[str, ShardManager, Path]]:
    gguf = write_gguf(
        tmp_path / "big.gguf", "llama", block_count=2, embedding_length=64, attention__head_count=4, context_length=512
    )
    fake = ollama_standin({"name": "a"})
    cluster = Cluster.model_validate(
        {
            "name": "sharded",
            "nodes": [
                {"name": "a", "address": "127.0.0.1", "transport": "local", "ollama": {"port": fake.port}},
                {"name": "r", "address": "127.0.0.1", "transport": "local", "rpc": {"port": 1}},
            ],
            "models": [{"name": "big", "mode": "shard", "gguf": str(gguf)}],
        }
    )
    opened = AsyncExitStack()
    runtime = await opened.enter_async_context(open_cluster(cluster, Settings()))
    shards = runtime.shards
    assert shards is not None
    runner = web.AppRunner(create_app(runtime, health_loop=False), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", shards, gguf
    finally:
        await runner.cleanup()
        await opened.aclose()
        await close_session()


async def test_tags_and_show_of_a_sharded_model(gateway_with_shards: tuple[str, ShardManager, Path]) -> None:
    url, _, gguf = gateway_with_shards
    async with aiohttp.ClientSession() as session:
        models = (await (await session.get(url + "/api/tags")).json())["models"]
        assert [m["name"] for m in models] == ["big:latest", "tiny:latest"]
        big = models[0]
        assert big["size"] == gguf.stat().st_size
        assert big["details"]["format"] == "gguf" and big["details"]["family"] == "llama"
        shown = await (await session.post(url + "/api/show", json={"model": "big"})).json()
        assert shown["model_info"]["llama.block_count"] == 2
        assert shown["model_info"]["general.architecture"] == "llama"
        assert shown["details"]["family"] == "llama" and str(gguf) in shown["modelfile"]
        openai_ids = [m["id"] for m in (await (await session.get(url + "/v1/models")).json())["data"]]
        assert openai_ids == ["big:latest", "tiny:latest"]


@asynccontextmanager
async def recorded_coordinator(shards: ShardManager, keep_alive: float) -> AsyncIterator[float]:
    """A coordinator record for 'big' with a live process behind it (a stand-in, not a llama-server); yields
    its last use."""
    stand_in = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        start_time = process_start_time(stand_in.pid)
        assert start_time is not None
        now = time.time()
        record = coord.CoordinatorRecord(
            model="big", digest="d", pid=stand_in.pid, start_time=start_time, host="127.0.0.1", port=1,
            log="", rpc=["127.0.0.1:1"], started_at=now, last_used=now, keep_alive=keep_alive,
        )  # fmt: skip
        coord.save_record(shards.home, record)
        yield now
    finally:
        coord.forget_record(shards.home, record)
        stand_in.kill()
        await stand_in.wait()


async def coordinator_in_ps(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        models = (await (await session.get(url + "/api/ps")).json())["models"]
    [coordinator] = [m for m in models if m["sollol"]["kind"] == "coordinator"]
    return dict(coordinator)


async def test_ps_names_a_running_coordinator(gateway_with_shards: tuple[str, ShardManager, Path]) -> None:
    url, shards, _ = gateway_with_shards
    async with recorded_coordinator(shards, keep_alive=300) as now:
        coordinator = await coordinator_in_ps(url)
    assert coordinator["name"] == "big:latest"
    assert coordinator["sollol"]["backend"] == "coordinator:big"
    assert coordinator["sollol"]["rpc"] == ["127.0.0.1:1"]
    assert coordinator["expires_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(now + 300)))


async def test_ps_of_a_coordinator_kept_for_ever(gateway_with_shards: tuple[str, ShardManager, Path]) -> None:
    """keep_alive -1: Ollama shows the far future (now + Go's longest duration, about 292 years)."""
    url, shards, _ = gateway_with_shards
    async with recorded_coordinator(shards, keep_alive=-1) as now:
        coordinator = await coordinator_in_ps(url)
    assert int(coordinator["expires_at"][:4]) - time.gmtime(now).tm_year in (292, 293)
