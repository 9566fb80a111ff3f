"""What the gateway keeps of its finished requests for the dashboard: the last routing decisions and traffic
over time (runtime/traffic.py), fed in one place, where the middleware finishes each request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from sollol_cli.events import CoordinatorExited, CoordinatorFailed
from sollol_cli.gateway.accesslog import Exchange
from sollol_cli.runtime.traffic import Finished, RecentRequests, TrafficSeries


class Feed:
    def __init__(self, *, clock: Callable[[], float] = time.time, size: int = 200) -> None:
        self.recent = RecentRequests(size)
        self.traffic = TrafficSeries(clock=clock)
        self.clock = clock
        self.changed = asyncio.Event()  # set after every request added (then replaced, as Monitor.changed)
        # per sharded model, its coordinator's last failure as the requests met it: {"at", "message"}
        self.coordinator_failures: dict[str, dict[str, Any]] = {}

    def add(
        self, exchange: Exchange, duration_s: float, queue_depth: int, queued_by_model: Mapping[str, int] | None = None
    ) -> None:
        """A finished request that named a model (the routed ones; /api/tags and the dashboard's own are not)."""
        self.traffic.queue_depth(queue_depth, queued_by_model)
        if exchange.model is None:
            return
        request = finished(exchange, duration_s, self.clock())
        self.recent.add(request)
        self.traffic.add(request)
        if exchange.mode == "shard":
            self._note_failure(exchange.model, exchange, request)
        self.changed.set()
        self.changed = asyncio.Event()

    def _note_failure(self, model: str, exchange: Exchange, request: Finished) -> None:
        """The coordinator's own words when it failed or exited (the end of its log), else the request's error."""
        said = [e.log for e in exchange.events if isinstance(e, CoordinatorFailed | CoordinatorExited) and e.log]
        message = said[-1] if said else (request.error if request.failed else None)
        if message:
            self.coordinator_failures[model] = {"at": request.at, "message": message}


def with_failures(models: list[dict[str, Any]], failures: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The status's model rows, each with `last_failure` (null, or when and why its coordinator last failed)."""
    return [row | {"last_failure": failures.get(row["name"])} for row in models]


def finished(ex: Exchange, duration_s: float, at: float) -> Finished:
    return Finished(
        at=at,
        method=ex.method,
        path=ex.path,
        status=ex.status,
        duration_s=duration_s,
        model=ex.model,
        backend=ex.backend,
        mode=ex.mode,
        reason=ex.reason or None,
        attempts=ex.attempts,
        queued_s=ex.queued_s,
        ttft_s=ex.ttft_s,
        tokens=ex.tokens,
        tokens_per_s=ex.tokens_per_s,
        error=ex.error,
    )
