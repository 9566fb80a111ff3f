"""A coordinator's keep-alive as each request sets it, and `keep_alive: 0` unloading it: at once when idle,
once its requests end when busy (asked of its slots, as the keep-alive loop and the watchdog ask)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from sollol_cli.backends.http import close_session
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.manager import EXPIRY_MARGIN_S, ShardManager
from sollol_cli.sharding.pool import RpcServer, ServingBackend
from sollol_cli.ssh.nodeproc import process_start_time


class NoBackends:
    """The manifest's one rpc backend, never answering; no serving backends."""

    def rpc_servers(self) -> list[RpcServer]:
        return [RpcServer("r", "127.0.0.1", 1, "m")]

    async def probe_rpc_servers(self) -> list[RpcServer]:
        return []

    def serving(self) -> list[ServingBackend]:
        return []


class Slots:
    """A llama-server's health and slots, with one slot busy while `busy` is set."""

    def __init__(self) -> None:
        self.busy = False
        self.runner: web.AppRunner | None = None

    async def start(self) -> int:
        answers = {
            "/health": lambda: {"status": "ok"},
            "/props": lambda: {"total_slots": 1},
            "/v1/models": lambda: {"data": []},
            "/slots": lambda: [{"id": 0, "is_processing": self.busy}],
        }

        async def answer(request: web.Request) -> web.Response:
            return web.json_response(answers[request.path]())

        app = web.Application()
        for path in answers:
            app.router.add_get(path, answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[ShardManager, asyncio.subprocess.Process, Slots]]:
    cluster = Cluster.model_validate(
        {
            "name": "ka",
            "backends": [{"name": "r", "kind": "rpc", "address": "127.0.0.1", "port": 1}],
            "models": [{"name": "big", "mode": "shard", "gguf": "/nowhere.gguf", "keep_alive": 120}],
        }
    )
    shards = ShardManager(cluster, Settings(state_dir=tmp_path), NoBackends())
    slots = Slots()
    port = await slots.start()
    process = await asyncio.create_subprocess_exec("sleep", "60")  # stands for the coordinator's process
    start_time = process_start_time(process.pid)
    assert start_time is not None
    now = time.time()
    record = coord.CoordinatorRecord(
        "big",
        "d",
        process.pid,
        start_time,
        "127.0.0.1",
        port,
        "",
        ["127.0.0.1:1"],
        now,
        now,
        120.0,
        ready_after_s=0.5,  # a loaded coordinator: one still loading is not for requests or unloading
    )
    coord.save_record(shards.home, record)
    try:
        yield shards, process, slots
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        assert slots.runner is not None
        await slots.runner.cleanup()
        await shards.close()
        await close_session()


def record_of(shards: ShardManager) -> coord.CoordinatorRecord | None:
    return coord.load_record(shards.home, "big")


@pytest.mark.parametrize(("keep_alive", "stored"), [(None, 120.0), (600.0, 600.0), (-1.0, -1.0)])
async def test_each_request_sets_the_keep_alive(
    running: tuple[ShardManager, asyncio.subprocess.Process, Slots], keep_alive: float | None, stored: float
) -> None:
    shards, _, _ = running
    backend = await shards.backend_for("big")  # the recorded one, reused
    await shards.release("big", backend, 600.0)
    await shards.release("big", backend, keep_alive)  # as in Ollama, a request that does not say resets it
    record = record_of(shards)
    assert record is not None and record.keep_alive == stored
    expires = coord.expires_at(record)
    assert expires is None if stored < 0 else expires == record.last_used + stored


async def test_keep_alive_0_stops_an_idle_coordinator(
    running: tuple[ShardManager, asyncio.subprocess.Process, Slots],
) -> None:
    shards, process, _ = running
    await shards.unload("big")
    assert record_of(shards) is None
    assert await process.wait() != 0  # stopped by its signal


async def test_keep_alive_0_waits_for_the_requests_a_coordinator_serves(
    running: tuple[ShardManager, asyncio.subprocess.Process, Slots],
) -> None:
    shards, process, slots = running
    slots.busy = True
    await shards.release("big", await shards.backend_for("big"), 0)
    record = record_of(shards)
    assert record is not None and record.keep_alive == 0 and process.returncode is None
    assert await shards.coordinators.expire() == []  # still busy: kept
    slots.busy = False
    assert await shards.coordinators.expire() == ["big"]
    assert record_of(shards) is None
    await process.wait()


async def test_a_request_marks_the_coordinator_in_use_only_when_its_keep_alive_is_about_to_end(
    running: tuple[ShardManager, asyncio.subprocess.Process, Slots],
) -> None:
    """Handing a coordinator to a request writes its record only when the keep-alive ends within the margin
    (otherwise nothing can expire it before the request arrives); the request's end is always written."""
    shards, _, _ = running
    path = coord.record_path(shards.home, "big")
    untouched = path.stat().st_ino
    backend = await shards.backend_for("big")  # used just now, 120 s keep-alive: nothing to write
    assert path.stat().st_ino == untouched

    record = record_of(shards)
    assert record is not None
    nearly_over = time.time() - 120 + EXPIRY_MARGIN_S / 2
    coord.update_record(shards.home, record, coord.used_at(nearly_over))
    before = path.stat().st_ino
    backend = await shards.backend_for("big")
    record = record_of(shards)
    assert path.stat().st_ino != before and record is not None and record.last_used > nearly_over

    ended = path.stat().st_ino
    await shards.release("big", backend, None)
    record = record_of(shards)
    assert path.stat().st_ino != ended and record is not None and time.time() - record.last_used < 5
