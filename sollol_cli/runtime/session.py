"""The cluster at run time, opened in one place: every entry point (`sollol run`, `status`, `serve`, the
demo) uses `open_cluster`, so all of them see the same backends, probe them the same way, never probe an
rpc-server a coordinator holds, and route through the same dispatcher and shard manager."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sollol_cli import events
from sollol_cli.backends.http import Timeouts, close_session
from sollol_cli.health import CircuitBreaker, ProbeSchedule
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.bench_results import load_results, measured_speeds
from sollol_cli.runtime.dispatch import Dispatcher
from sollol_cli.runtime.inventory import inventory
from sollol_cli.runtime.monitor import Monitor
from sollol_cli.settings import Settings
from sollol_cli.sharding.coordinator import CoordinatorRecord, attached_endpoints
from sollol_cli.sharding.lifecycle import coordinator_home
from sollol_cli.sharding.manager import ShardManager, can_shard


class ClusterRuntime:
    """The manifest's backends, the monitor probing them, the dispatcher routing to them and, when the
    cluster has rpc backends, the shard manager (`shards`). Made by `open_cluster`."""

    def __init__(
        self,
        cluster: Cluster,
        settings: Settings,
        *,
        reporter: events.Reporter = events.ignore,
        stop_on_close: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        routing = cluster.routing
        self.timeouts = Timeouts(
            connect=routing.connect_timeout, read=routing.read_timeout, probe=routing.connect_timeout
        )
        # backoff capped at a few intervals: a backend that comes back is re-admitted within them
        schedule = ProbeSchedule(interval_s=routing.probe_interval, max_backoff_s=routing.probe_interval * 4)
        home = coordinator_home(settings, cluster.name)
        # rpc-server serves one client at a time: the ones a coordinator holds are reported busy, not probed
        breaker = CircuitBreaker(cooldown_s=routing.breaker_cooldown)
        self.monitor = Monitor(
            inventory(cluster),
            self.timeouts,
            schedule=schedule,
            breaker=breaker,
            attached=lambda: attached_endpoints(home),
        )
        self.bench_rows = load_results(settings.state_dir, cluster.name)  # what `sollol bench` saved
        self.monitor.measured = measured_speeds(self.bench_rows)
        self.shards: ShardManager | None = None
        if can_shard(cluster):
            self.shards = ShardManager(cluster, settings, self.monitor, reporter=reporter, stop_on_close=stop_on_close)
        self.dispatcher = Dispatcher(self.monitor, routing, sharded=self.shards, rng=rng)

    async def running_coordinators(self) -> dict[str, CoordinatorRecord]:
        """The coordinators that run now, by model (each checked)."""
        return await self.shards.coordinators.running() if self.shards is not None else {}


@asynccontextmanager
async def open_cluster(
    cluster: Cluster,
    settings: Settings,
    *,
    reporter: events.Reporter = events.ignore,
    stop_on_close: bool = False,
    rng: random.Random | None = None,
) -> AsyncIterator[ClusterRuntime]:
    """`async with open_cluster(cluster, settings) as rt:` probes every backend once, then routes requests.
    On the way out coordinators this runtime started are stopped when `stop_on_close` (`serve`; `run` leaves
    them warm for their keep-alive), and the HTTP session is closed. `rng` decides among equally good backends
    (a fresh `random.Random` when None; tests pass a seeded one)."""
    runtime = ClusterRuntime(cluster, settings, reporter=reporter, stop_on_close=stop_on_close, rng=rng)
    try:
        await runtime.monitor.probe_all()
        yield runtime
    finally:
        try:
            if runtime.shards is not None:
                await runtime.shards.close()
        finally:
            await close_session()


@asynccontextmanager
async def kept_running(runtime: ClusterRuntime) -> AsyncIterator[None]:
    """What a long-lived user of the runtime (`serve`, the Python API) runs beside its requests: the health
    loop that probes the backends as they come and go, and, when models may be sharded, the expiry of
    coordinators idle for longer than their keep-alive. Cancelled on the way out."""
    tasks = [asyncio.create_task(runtime.monitor.run(), name="sollol-health")]
    if runtime.shards is not None:
        tasks.append(
            asyncio.create_task(_expire_coordinators(runtime.shards, runtime.cluster), name="sollol-keep-alive")
        )
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _expire_coordinators(shards: ShardManager, cluster: Cluster) -> None:
    """Stop coordinators idle for longer than their keep-alive (a long-running process outlives many)."""
    while True:
        await asyncio.sleep(max(cluster.routing.probe_interval, 5.0))
        await shards.coordinators.expire()
