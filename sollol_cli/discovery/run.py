"""`sollol discover` as a library call."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sollol_cli import events
from sollol_cli.discovery.fingerprint import Found, fingerprint_all
from sollol_cli.discovery.scan import SUBJECT, scan_ports
from sollol_cli.discovery.targets import Network, endpoint, host_count, hosts

FINGERPRINT_CONCURRENCY = 64  # each fingerprint may use a few connections of its own
FINGERPRINT_TIMEOUT = 1.0  # at least this long for HTTP answers, even with a shorter connect timeout


@dataclass(frozen=True)
class ScanResult:
    networks: list[str]
    ports: tuple[int, ...]
    addresses: int
    found: list[Found]
    seconds: float
    silent: list[tuple[str, int]] = field(default_factory=list)  # see scan.py


async def discover(
    networks: list[Network],
    ports: tuple[int, ...],
    *,
    concurrency: int = 512,
    timeout: float = 0.5,
    reporter: events.Reporter = events.ignore,
) -> ScanResult:
    """Scan `networks` x `ports` (the caller has applied the safety rules) and fingerprint what is open."""
    from sollol_cli.backends.http import close_session

    started = time.monotonic()
    try:
        scan = await scan_ports(
            hosts(networks),
            ports,
            total_addresses=host_count(networks),
            concurrency=concurrency,
            timeout=timeout,
            reporter=reporter,
        )
        reporter(events.StepStarted(SUBJECT, "fingerprinting", f"{len(scan.open)} open ports"))
        found = await fingerprint_all(
            scan.open,
            timeout=max(timeout, FINGERPRINT_TIMEOUT),
            concurrency=min(concurrency, FINGERPRINT_CONCURRENCY),
            connect_ms=scan.connect_ms,
            reporter=reporter,
        )
        reporter(events.StepDone(SUBJECT, "fingerprinting", f"{sum(f.kind != 'unknown' for f in found)} backends"))
    finally:
        await close_session()
    seconds = time.monotonic() - started
    return ScanResult([str(n) for n in networks], ports, scan.addresses, found, seconds, scan.silent)


def result_data(result: ScanResult, written: list[Found] | None = None) -> dict[str, Any]:
    return {
        "networks": result.networks,
        "ports": list(result.ports),
        "addresses": result.addresses,
        "seconds": round(result.seconds, 3),
        "found": [asdict(item) for item in result.found],
        "silent": [endpoint(address, port) for address, port in result.silent],
        "written": [endpoint(item.address, item.port) for item in written or []],
    }
