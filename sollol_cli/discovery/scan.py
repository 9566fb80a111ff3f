"""The TCP connect scan: bounded concurrency, a short connect timeout per probe, progress events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from sollol_cli import events

SUBJECT = "scan"


async def _is_open(host: str, port: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()  # a plain connect-and-close is harmless even to rpc-server
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def open_ports(
    addresses: Sequence[str],
    ports: Sequence[int],
    *,
    concurrency: int = 512,
    timeout: float = 0.5,
    reporter: events.Reporter = events.ignore,
) -> list[tuple[str, int]]:
    """(address, port) pairs that accept a TCP connection, in address order; never more than
    `concurrency` connects in flight."""
    targets = [(address, port) for address in addresses for port in ports]
    limit = asyncio.Semaphore(concurrency)
    found: list[tuple[str, int]] = []
    done = 0
    last = 0.0
    reporter(events.StepStarted(SUBJECT, "probing", f"{len(addresses)} addresses x {len(ports)} ports"))

    async def probe(host: str, port: int) -> None:
        nonlocal done, last
        async with limit:
            if await _is_open(host, port, timeout):
                found.append((host, port))
        done += 1
        now = time.monotonic()
        if now - last > 0.1 or done == len(targets):
            last = now
            reporter(events.StepProgress(SUBJECT, "probing", done, len(targets), f"{len(found)} open"))

    await asyncio.gather(*(probe(host, port) for host, port in targets))
    reporter(events.StepDone(SUBJECT, "probing", f"{len(found)} open ports"))
    order = {address: i for i, address in enumerate(addresses)}
    return sorted(found, key=lambda item: (order[item[0]], item[1]))
