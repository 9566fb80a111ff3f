"""What answers on an open port: Ollama, llama-server, rpc-server, or something else ("unknown").

rpc-server serves one client at a time with a listen backlog of 1: while a coordinator is attached,
the kernel queues at most two more connections and then drops new ones. So the HELLO goes first, on the
second connection the port sees (the scan's connect was the first): a busy rpc-server accepts it but
never answers. HTTP servers do not answer a HELLO either (it is no request line), so a silent HELLO is
only "busy" when the HTTP probes that follow do not recognise Ollama or llama-server.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from sollol_cli.backends.base import BackendRef
from sollol_cli.backends.http import Timeouts
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.backends.ollama import OllamaBackend
from sollol_cli.backends.rpc import RpcProbe, probe_rpc

Kind = Literal["ollama", "llamacpp", "rpc", "unknown"]
HELLO_WAIT = 0.5  # an idle rpc-server answers HELLO in milliseconds


@dataclass(frozen=True)
class Found:
    address: str
    port: int
    kind: Kind
    state: str  # ready | busy | loading | unknown
    version: str | None = None
    models: tuple[str, ...] = ()
    free_bytes: int | None = None
    total_bytes: int | None = None
    slots: int | None = None
    latency_ms: float | None = None
    detail: str = ""
    devices: tuple[str, ...] = field(default=())


async def fingerprint(address: str, port: int, *, timeout: float = 1.0) -> Found:
    started = time.perf_counter()

    def ms() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    rpc = await probe_rpc(address, port, connect_timeout=timeout, reply_timeout=min(timeout, HELLO_WAIT))
    if rpc.state == "ready":
        return _rpc_found(address, port, rpc, ms(), "")
    timeouts = Timeouts(connect=timeout, read=timeout, probe=timeout)
    ollama, llama = await asyncio.gather(
        OllamaBackend(BackendRef(address, "ollama", address, port), timeouts).probe(),
        LlamaServerBackend(BackendRef(address, "llamacpp", address, port), timeouts).probe(),
    )
    if ollama.reachable and ollama.version:
        names = tuple(m.name for m in ollama.models)
        return Found(address, port, "ollama", "ready", ollama.version, names, latency_ms=ms())
    if llama.ready and llama.version:
        names = tuple(m.name for m in llama.models)
        return Found(address, port, "llamacpp", "ready", llama.version, names, slots=llama.slots, latency_ms=ms())
    if llama.reachable and llama.error and "Loading model" in llama.error:
        return Found(address, port, "llamacpp", "loading", detail="loading its model", latency_ms=ms())
    if rpc.state == "busy":
        return _rpc_found(address, port, rpc, ms(), "connected, no HELLO reply: a coordinator is attached")
    if rpc.state == "down" and "timed out" in (rpc.error or ""):
        # open during the scan, now every connect times out: the one-client accept queue is full
        return _rpc_found(address, port, rpc, ms(), "accepts no more connections: a coordinator is attached")
    return Found(
        address, port, "unknown", "unknown", detail="open, but not Ollama, llama-server or rpc-server", latency_ms=ms()
    )


def _rpc_found(address: str, port: int, rpc: RpcProbe, latency: float, detail: str) -> Found:
    version = ".".join(map(str, rpc.protocol)) if rpc.protocol else None
    free = sum(d.free for d in rpc.devices) if rpc.devices else None
    total = sum(d.total for d in rpc.devices) if rpc.devices else None
    state = "ready" if rpc.state == "ready" else "busy"
    return Found(address, port, "rpc", state, version, (), free, total, latency_ms=latency, detail=detail)


async def fingerprint_all(
    targets: list[tuple[str, int]], *, timeout: float = 1.0, concurrency: int = 64
) -> list[Found]:
    limit = asyncio.Semaphore(concurrency)

    async def one(address: str, port: int) -> Found:
        async with limit:
            return await fingerprint(address, port, timeout=timeout)

    return list(await asyncio.gather(*(one(address, port) for address, port in targets)))
