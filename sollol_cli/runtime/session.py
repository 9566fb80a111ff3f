"""One runtime per command: the manifest's backends, a monitor probing them, a dispatcher routing to them."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from sollol_cli.backends.http import Timeouts, close_session
from sollol_cli.health import CircuitBreaker, ProbeSchedule
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.dispatch import Dispatcher, ShardedModels
from sollol_cli.runtime.inventory import inventory
from sollol_cli.runtime.monitor import Monitor

if TYPE_CHECKING:
    from sollol_cli.sharding.coordinator import Attachment


class ClusterRuntime:
    """`async with ClusterRuntime(cluster) as rt:` probes every backend once, then routes requests."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        sharded: ShardedModels | None = None,
        probe: bool = True,
        attached: Callable[[], dict[str, Attachment]] | None = None,
    ) -> None:
        self.cluster = cluster
        routing = cluster.routing
        self.timeouts = Timeouts(
            connect=routing.connect_timeout, read=routing.read_timeout, probe=routing.connect_timeout
        )
        # backoff capped at a few intervals: a backend that comes back is re-admitted within them
        schedule = ProbeSchedule(interval_s=routing.probe_interval, max_backoff_s=routing.probe_interval * 4)
        breaker = CircuitBreaker(cooldown_s=routing.breaker_cooldown)
        self.monitor = Monitor(inventory(cluster), self.timeouts, schedule=schedule, breaker=breaker, attached=attached)
        self.dispatcher = Dispatcher(self.monitor, routing, sharded=sharded)
        self._probe = probe

    async def __aenter__(self) -> ClusterRuntime:
        if self._probe:
            await self.monitor.probe_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await close_session()
