"""Graceful stop: in-flight requests get up to the grace period, then the ones still running are cut with
an error in their own API shape (a last NDJSON `{"error": ...}` line, an SSE error event, or a 503 before
the first byte) instead of a dropped connection, and the access log says the server cut them."""

from __future__ import annotations

import asyncio
import contextlib


class ShutdownGate:
    """The handler tasks in flight, so a stop can wait for them (event-driven, no polling) and cut the rest."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False  # new requests are refused with 503
        self.stopping = asyncio.Event()  # set with `closing`: endless answers (the dashboard's stream) end then
        self.cut_reason: str | None = None  # set when the grace period ran out

    def enter(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            self._idle.clear()

    def leave(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def was_cut(self) -> bool:
        """True in a handler whose task the stop cancelled: take the cancellation back and answer with the
        cut instead (only the stop's cancellation: a client that went away still cancels for real)."""
        task = asyncio.current_task()
        if self.cut_reason is None or task is None or task not in self._tasks:
            return False
        task.uncancel()
        return True

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for the requests in flight; cut those still running. Returns how many were cut."""
        self.closing = True
        self.stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        if not self._tasks:
            return 0
        cut = list(self._tasks)
        self.cut_reason = f"the server is shutting down: the request ran past its {grace_s:g} s grace period"
        for task in cut:
            task.cancel()
        # a cut request ends at once (it only writes its error line); the bound guards against a stuck write
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=5.0)
        return len(cut)
