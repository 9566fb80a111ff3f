"""`sollol serve` never connects to an rpc-server a coordinator holds: rpc-server serves one client at a time,
so a HELLO probe would queue behind the coordinator (or, if the coordinator reconnected, take its place).
Two counting TCP stand-ins: one recorded as held by a running coordinator, one free. The gateway probes the
free one on start and again from its health loop; the held one must see no connection at all."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home
from sollol_cli.ssh.nodeproc import process_start_time


class CountingServer:
    """Accepts, counts and closes every connection; `seen(n)` is set once `n` arrived."""

    def __init__(self) -> None:
        self.connections = 0
        self.waiters: dict[int, asyncio.Event] = {}
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        for count, event in self.waiters.items():
            if self.connections >= count:
                event.set()
        writer.close()

    def seen(self, count: int) -> asyncio.Event:
        event = self.waiters.setdefault(count, asyncio.Event())
        if self.connections >= count:
            event.set()
        return event

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_serve_never_probes_an_rpc_server_a_coordinator_holds(tmp_path: Path) -> None:
    held, free = CountingServer(), CountingServer()
    held_port, free_port = await held.start(), await free.start()
    cluster = Cluster.model_validate(
        {
            "name": "held",
            "backends": [
                {"name": "held", "kind": "rpc", "address": "127.0.0.1", "port": held_port},
                {"name": "free", "kind": "rpc", "address": "127.0.0.1", "port": free_port},
            ],
            "routing": {"probe_interval": 0.05},
        }
    )
    settings = Settings(state_dir=tmp_path / "state")
    coordinator = await asyncio.create_subprocess_exec("sleep", "60")  # a live process for the record
    start_time = process_start_time(coordinator.pid)
    assert start_time is not None
    now = time.time()
    record = coord.CoordinatorRecord(
        model="big", digest="d", pid=coordinator.pid, start_time=start_time, host="127.0.0.1", port=1,
        log="", rpc=[f"127.0.0.1:{held_port}"], started_at=now, last_used=now, keep_alive=300,
    )  # fmt: skip
    coord.save_record(coordinator_home(settings, "held"), record)
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(cluster, settings, ServeOptions("127.0.0.1", 0, grace_s=1), stop, on_listening=listening.set_result)
    )
    try:
        await asyncio.wait_for(listening, 30)
        await asyncio.wait_for(free.seen(4).wait(), 30)  # the start-up probe and three rounds of the health loop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        coordinator.kill()
        await coordinator.wait()
        await held.stop()
        await free.stop()
    assert held.connections == 0
    assert coord.load_record(coordinator_home(settings, "held"), "big") is not None  # serve left it alone
