"""The TCP connect scan: bounded concurrency, a short connect timeout per probe, progress events.

Besides the open ports it reports "silent" ones: no answer within the timeout on an address that did
answer on another port. A closed port refuses at once and an absent host answers nothing at all, so a
port that stays silent on a live host is dropping connections: a firewall, or an rpc-server busy with a
coordinator whose one-client accept queue is already full (earlier probes fill it; see backends/rpc.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import resource
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sollol_cli import events
from sollol_cli.errors import UsageError

SUBJECT = "scan"
FD_RESERVE = 64  # descriptors kept free for the event loop, HTTP sessions and the manifest
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE}

Outcome = Literal["open", "refused", "timeout", "unreachable"]
Target = tuple[str, int]


@dataclass(frozen=True)
class PortScan:
    open: list[Target]  # accepted a connection, in address order
    silent: list[Target]  # no answer on an address that answered on another port
    connect_ms: dict[Target, float] = field(default_factory=dict)  # of the open ones
    addresses: int = 0  # how many addresses were probed


async def _connect(host: str, port: int, timeout: float) -> Outcome:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        if exc.errno in _OUT_OF_DESCRIPTORS:
            raise UsageError(
                "ran out of file descriptors while scanning", hint="lower --concurrency or raise `ulimit -n`"
            ) from None
        return "unreachable"
    writer.close()  # a plain connect-and-close is harmless even to rpc-server
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "open"


def usable_concurrency(requested: int) -> int:
    """`requested`, or fewer if the open-files limit cannot hold that many sockets (the soft limit is
    raised towards the hard one first): a connect failing with EMFILE must never look like a closed port."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = requested + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, soft - FD_RESERVE))


async def scan_ports(
    addresses: Iterable[str],
    ports: Sequence[int],
    *,
    total_addresses: int | None = None,
    concurrency: int = 512,
    timeout: float = 0.5,
    reporter: events.Reporter = events.ignore,
) -> PortScan:
    """Try every (address, port) once, `concurrency` workers pulling from one stream of targets: never
    more connects in flight, and memory that does not grow with the size of the range."""
    allowed = usable_concurrency(concurrency)
    if allowed < concurrency:
        reporter(events.Warning(SUBJECT, f"open-files limit allows only {allowed} connects at once, not {concurrency}"))
    total = total_addresses * len(ports) if total_addresses is not None else None
    remaining: dict[str, int] = {}  # ports still to probe, per address being probed
    timed_out: dict[str, list[int]] = {}
    alive: set[str] = set()
    opened: list[Target] = []
    silent: list[Target] = []
    connect_ms: dict[Target, float] = {}
    probed = seen = 0
    last_report = 0.0

    def targets() -> Iterator[Target]:
        nonlocal seen
        for address in addresses:
            seen += 1
            remaining[address] = remaining.get(address, 0) + len(ports)
            for port in ports:
                yield address, port

    def record(address: str, port: int, outcome: Outcome, started: float) -> None:
        nonlocal probed, last_report
        probed += 1
        if outcome == "open":
            opened.append((address, port))
            connect_ms[(address, port)] = round((time.perf_counter() - started) * 1000, 1)
        if outcome in ("open", "refused"):
            alive.add(address)
        elif outcome == "timeout":
            timed_out.setdefault(address, []).append(port)
        remaining[address] -= 1
        if remaining[address] == 0:  # all its ports done: decide about its silent ones, then forget it
            del remaining[address]
            no_answer = timed_out.pop(address, [])
            if address in alive:
                alive.discard(address)
                silent.extend((address, p) for p in no_answer)
        now = time.monotonic()
        if now - last_report > 0.1 or probed == total:
            last_report = now
            detail = f"{probed}/{total if total is not None else '?'} probed, {len(opened)} open"
            reporter(events.StepProgress(SUBJECT, "probing", probed, total, detail))

    stream = targets()

    async def worker() -> None:
        for address, port in stream:  # one shared generator: each target goes to exactly one worker
            started = time.perf_counter()
            record(address, port, await _connect(address, port, timeout), started)

    count = f"{total_addresses} addresses" if total_addresses is not None else "addresses"
    reporter(events.StepStarted(SUBJECT, "probing", f"{count} x {len(ports)} ports"))
    workers = [asyncio.create_task(worker()) for _ in range(allowed)]
    try:
        await asyncio.gather(*workers)
    finally:  # one failed (out of file descriptors): stop the others too
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    reporter(events.StepDone(SUBJECT, "probing", f"{len(opened)} open ports"))
    return PortScan(sorted(opened, key=_order), sorted(silent, key=_order), connect_ms, addresses=seen)


def _order(target: Target) -> tuple[int, int, int]:
    address = ipaddress.ip_address(target[0])
    return address.version, int(address), target[1]
