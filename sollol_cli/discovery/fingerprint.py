"""What answers on an open port: Ollama, llama-server, rpc-server, or something else ("unknown").

The rpc-server HELLO goes first; the HTTP probes follow a moment later, and an HTTP answer ends the wait
for a HELLO reply (HTTP servers wait for a newline that the HELLO never sends). rpc-server drops a
connection whose first byte is not HELLO, so the HTTP requests are harmless to it, queued or not.

rpc-server serves one client at a time with a listen backlog of 1: while a coordinator is attached, the
kernel queues at most two more connections and drops any further SYN. A queued connection is accepted
but never answered, so a busy rpc-server leaves the HELLO unanswered (or, with its queue already full,
lets it time out while connecting). That alone proves nothing, though: many servers wait for a line or
a request before they say anything. What sets a busy rpc-server apart is its full accept queue, so a
silent HELLO is followed by a few plain connects: if most of them cannot even connect, it is a busy
rpc-server; if they connect, the HTTP probes decide, and whatever they do not recognise is "unknown",
never a backend.

Ollama is recognised by the JSON shapes of both `/api/version` and `/api/tags`; llama-server by a
healthy `/health` plus `/props` with `build_info` and `total_slots` (or the 503 "Loading model" it
sends while loading). An HTTP server that answers 200 to everything has neither shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, Literal

from sollol_cli import events
from sollol_cli.backends.base import BackendRef, BackendStatus
from sollol_cli.backends.http import Timeouts, request_json
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.backends.rpc import RpcProbe, probe_rpc

Kind = Literal["ollama", "llamacpp", "rpc", "unknown"]
HELLO_WAIT = 0.5  # an idle rpc-server answers HELLO in milliseconds
HTTP_HEAD_START = 0.05  # the HELLO connects this long before the HTTP probes start
QUEUE_PROBES = 3  # a busy rpc-server has room for at most one more connection, so >= 2 of these fail
SUBJECT = "scan"


@dataclass(frozen=True)
class Found:
    address: str
    port: int
    kind: Kind
    state: str  # ready | busy | loading | unknown | gone
    version: str | None = None
    models: tuple[str, ...] = ()
    free_bytes: int | None = None
    total_bytes: int | None = None
    slots: int | None = None
    latency_ms: float | None = None
    detail: str = ""
    devices: int | None = None


async def fingerprint(address: str, port: int, *, timeout: float = 1.0, connect_ms: float | None = None) -> Found:
    """Identify one open port. `connect_ms` (from the scan) is the latency shown for non-backends."""
    wait = min(timeout, HELLO_WAIT)
    timeouts = Timeouts(connect=timeout, read=timeout, probe=timeout)
    hello = asyncio.create_task(probe_rpc(address, port, connect_timeout=timeout, reply_timeout=wait))
    http: asyncio.Task[Found | None] | None = None
    try:
        # The HELLO's connect goes out first: an idle rpc-server must accept it before the HTTP requests,
        # or one of those could take the only free place in its queue and the HELLO would never connect.
        await asyncio.wait({hello}, timeout=HTTP_HEAD_START)
        if hello.done() and hello.result().state == "ready":
            return _rpc_found(address, port, hello.result(), "ready", hello.result().error or "")
        http = asyncio.create_task(_http(address, port, timeouts))
        # HTTP servers never answer the HELLO (it has no newline): do not wait for it once HTTP has spoken
        done, _ = await asyncio.wait({hello, http}, return_when=asyncio.FIRST_COMPLETED)
        if http in done and (found := http.result()) is not None:
            return found
        rpc = await hello
        if rpc.state == "ready":  # the error says so when it speaks another protocol version
            return _rpc_found(address, port, rpc, "ready", rpc.error or "")
        if rpc.state == "down" and not _timed_out(rpc):
            return Found(address, port, "unknown", "gone", detail="stopped accepting connections during the scan")
        silent = rpc.state in ("busy", "down")  # no HELLO reply, or no connect at all any more
        if silent and await _accept_queue_full(address, port, wait):
            return _rpc_found(address, port, rpc, "busy", "accepts no more connections: a coordinator is attached")
        found = await http
    finally:
        tasks = [task for task in (hello, http) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if found is not None:
        return found
    what = "answers neither an rpc-server HELLO nor HTTP" if silent else "not Ollama, llama-server or rpc-server"
    return Found(address, port, "unknown", "unknown", detail=f"open, but {what}", latency_ms=connect_ms)


async def _http(address: str, port: int, timeouts: Timeouts) -> Found | None:
    """Ollama or llama-server, or None."""
    ollama, llama = await asyncio.gather(
        _ollama(address, port, timeouts),
        LlamaServerBackend(BackendRef(address, "llamacpp", address, port), timeouts).probe(),
    )
    if ollama is not None:
        return ollama
    if llama.reachable and llama.version and llama.slots is not None:
        names = tuple(m.name for m in llama.models)
        return Found(
            address, port, "llamacpp", "ready", llama.version, names, slots=llama.slots, latency_ms=llama.latency_ms
        )
    if _loading(llama):
        return Found(address, port, "llamacpp", "loading", detail="loading its model", latency_ms=llama.latency_ms)
    return None


def _timed_out(rpc: RpcProbe) -> bool:
    return "timed out" in (rpc.error or "")


def _loading(status: BackendStatus) -> bool:
    return status.reachable and "Loading model" in (status.error or "")


async def _accept_queue_full(address: str, port: int, timeout: float) -> bool:
    """True when most of a few plain connects time out: a one-client server whose queue is full.
    (They send nothing and close at once, which is harmless to rpc-server when it gets to them.)"""

    async def times_out() -> bool:
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(address, port)
        except TimeoutError:
            return True
        except OSError:  # refused: the server is gone, not full
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return False

    results = await asyncio.gather(*(times_out() for _ in range(QUEUE_PROBES)))
    return results.count(True) >= 2


async def _ollama(address: str, port: int, timeouts: Timeouts) -> Found | None:
    """Ollama only if `/api/version` is `{"version": "..."}` and `/api/tags` is `{"models": [...]}`."""
    ref = BackendRef(address, "ollama", address, port)
    started = time.perf_counter()

    async def version() -> tuple[Any, float]:
        data = await request_json(ref, "GET", "/api/version", timeout=timeouts.for_probe())
        return data, round((time.perf_counter() - started) * 1000, 1)

    # any failure (refused, HTTP error, not JSON, timeout) means "not Ollama"
    answered, tags = await asyncio.gather(
        version(), request_json(ref, "GET", "/api/tags", timeout=timeouts.for_probe()), return_exceptions=True
    )
    if isinstance(answered, BaseException) or isinstance(tags, BaseException):
        return None
    data, latency = answered
    if not (isinstance(data, dict) and isinstance(data.get("version"), str) and data["version"]):
        return None
    if not (isinstance(tags, dict) and isinstance(tags.get("models"), list)):
        return None
    names = [m.get("name") or m.get("model") for m in tags["models"] if isinstance(m, dict)]
    return Found(
        address, port, "ollama", "ready", data["version"], tuple(str(n) for n in names if n), latency_ms=latency
    )


def _rpc_found(address: str, port: int, rpc: RpcProbe, state: str, detail: str) -> Found:
    version = ".".join(map(str, rpc.protocol)) if rpc.protocol else None
    free = sum(d.free for d in rpc.devices) if rpc.devices else None
    total = sum(d.total for d in rpc.devices) if rpc.devices else None
    devices = len(rpc.devices) if rpc.protocol else None
    latency = round(rpc.latency_ms, 1) if rpc.latency_ms is not None else None
    return Found(
        address, port, "rpc", state, version, (), free, total, latency_ms=latency, detail=detail, devices=devices
    )


async def fingerprint_all(
    targets: list[tuple[str, int]],
    *,
    timeout: float = 1.0,
    concurrency: int = 64,
    connect_ms: dict[tuple[str, int], float] | None = None,
    reporter: events.Reporter = events.ignore,
) -> list[Found]:
    """Fingerprint every target, at most `concurrency` at a time; results in the order of `targets`."""
    limit = asyncio.Semaphore(concurrency)
    latencies = connect_ms or {}
    done = 0
    backends = 0

    async def one(address: str, port: int) -> Found:
        nonlocal done, backends
        async with limit:
            found = await fingerprint(address, port, timeout=timeout, connect_ms=latencies.get((address, port)))
        done += 1
        backends += found.kind != "unknown"
        reporter(events.StepProgress(SUBJECT, "fingerprinting", done, len(targets), f"{backends} backends"))
        return found

    return list(await asyncio.gather(*(one(address, port) for address, port in targets)))
