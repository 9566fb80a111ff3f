"""`sollol discover` as a library call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sollol_cli import events
from sollol_cli.discovery.fingerprint import Found, fingerprint_all
from sollol_cli.discovery.scan import open_ports
from sollol_cli.discovery.targets import Network, hosts


@dataclass(frozen=True)
class ScanResult:
    networks: list[str]
    ports: tuple[int, ...]
    addresses: int
    found: list[Found]
    seconds: float


async def discover(
    networks: list[Network],
    ports: tuple[int, ...],
    *,
    concurrency: int = 512,
    timeout: float = 0.5,
    reporter: events.Reporter = events.ignore,
) -> ScanResult:
    from sollol_cli.backends.http import close_session

    started = time.monotonic()
    addresses = list(hosts(networks))
    try:
        opened = await open_ports(addresses, ports, concurrency=concurrency, timeout=timeout, reporter=reporter)
        reporter(events.StepStarted("scan", "fingerprinting", f"{len(opened)} open ports"))
        found = await fingerprint_all(opened, timeout=max(timeout, 1.0), concurrency=min(concurrency, 64))
        reporter(events.StepDone("scan", "fingerprinting", f"{sum(f.kind != 'unknown' for f in found)} backends"))
    finally:
        await close_session()
    return ScanResult([str(n) for n in networks], ports, len(addresses), found, time.monotonic() - started)


def result_data(result: ScanResult, written: list[Found] | None = None) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "networks": result.networks,
        "ports": list(result.ports),
        "addresses": result.addresses,
        "seconds": round(result.seconds, 3),
        "found": [asdict(item) for item in result.found],
        "written": [f"{item.address}:{item.port}" for item in written or []],
    }
