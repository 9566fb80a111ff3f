"""The logs the dashboard can follow: what `sollol logs` reads (the services `up` started and the coordinators
the manifest puts on nodes) plus the coordinators this machine runs, which only their records know."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sollol_cli.errors import UsageError
from sollol_cli.provision.logs import LogSource, follow_local_log, log_sources, read_log
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home

if TYPE_CHECKING:
    from sollol_cli.runtime.session import ClusterRuntime

HERE = ""  # the node of a log on this machine


def sources(runtime: ClusterRuntime) -> list[LogSource]:
    local = [LogSource(HERE, f"coordinator:{record.model}") for record in _local_coordinators(runtime)]
    return log_sources(runtime.cluster) + local


async def follow(runtime: ClusterRuntime, node: str, role: str, *, lines: int) -> AsyncIterator[str]:
    """The last `lines` lines of the log, then each new chunk as it is written (until the caller stops)."""
    if node == HERE:
        kind, _, model = role.partition(":")
        record = next((r for r in _local_coordinators(runtime) if kind == "coordinator" and r.model == model), None)
        if record is None:
            raise UsageError(f"no coordinator for '{model}' runs on this machine")
        chunks = follow_local_log(record.log, lines=lines)
    else:
        chunks = read_log(runtime.cluster, runtime.settings, node, role or None, lines=lines, follow=True)
    async for chunk in chunks:
        yield chunk


def _local_coordinators(runtime: ClusterRuntime) -> list[coord.CoordinatorRecord]:
    home = coordinator_home(runtime.settings, runtime.cluster.name)
    return [record for record in coord.all_records(home) if record.node is None and coord.alive(record)]
