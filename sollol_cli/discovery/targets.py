"""What may be scanned (pure): CIDR parsing, the safety rules, and the controller's own subnets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sollol_cli.errors import UsageError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_PREFIX_V4 = 16  # larger ranges (fewer prefix bits) need --force
MAX_ADDRESSES_V6 = 256
DEFAULT_PORTS = (11434, 8080, 50052)


def parse_networks(cidrs: Sequence[str], *, force: bool = False) -> list[Network]:
    """Validate every CIDR; refuse ranges larger than a /16 and public ranges unless `force`."""
    networks: list[Network] = []
    for text in cidrs:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise UsageError(f"'{text}' is not a CIDR", hint="write it like 192.168.1.0/24 or 10.0.0.5/32") from None
        if network.version == 6 and network.num_addresses > MAX_ADDRESSES_V6:
            raise UsageError(f"{network} has {network.num_addresses} addresses; IPv6 ranges of at most 256 only")
        if network.version == 4 and network.prefixlen < MAX_PREFIX_V4 and not force:
            raise UsageError(
                f"{network} is larger than a /16 ({network.num_addresses} addresses)",
                hint="scan smaller ranges, or pass --force if you really mean it",
            )
        if not _private(network) and not force:
            raise UsageError(
                f"{network} is not a private or loopback range",
                hint="sollol scans your own lab; pass --force only for ranges you are allowed to scan",
            )
        networks.append(network)
    return networks


def _private(network: Network) -> bool:
    return network.is_private or network.is_loopback or network.is_link_local


def distinct(networks: Iterable[Network]) -> list[Network]:
    """The networks not inside another one, in the given order: what is left never overlaps."""
    given = list(dict.fromkeys(networks))
    return [n for n in given if not any(n != other and _inside(n, other) for other in given)]


def _inside(network: Network, other: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(other, ipaddress.IPv4Network):
        return network.subnet_of(other)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(other, ipaddress.IPv6Network):
        return network.subnet_of(other)
    return False


def _hosts_of(network: Network) -> Iterator[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    # network and broadcast addresses are skipped, except in /31 and /32 where every address is a host
    return network.hosts() if network.num_addresses > 2 else iter(network)


def hosts(networks: Iterable[Network]) -> Iterator[str]:
    """Every address to probe, once, lazily (a forced /8 is 16 million of them)."""
    for network in distinct(networks):
        for address in _hosts_of(network):
            yield str(address)


def host_count(networks: Iterable[Network]) -> int:
    """len(list(hosts(networks))), without listing them."""
    total = 0
    for network in distinct(networks):
        if network.num_addresses <= 2:
            total += network.num_addresses
        elif network.version == 6:
            total += network.num_addresses - 1  # IPv6 has no broadcast address; only the subnet-router anycast one
        else:
            total += network.num_addresses - 2
    return total


def parse_ports(text: str) -> tuple[int, ...]:
    ports: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= 65535:
            raise UsageError(f"--ports: '{part}' is not a port number", hint="e.g. --ports 11434,8080,50052")
        ports.append(int(part))
    return tuple(dict.fromkeys(ports))


def local_networks(interfaces: Any) -> list[Network]:
    """The controller's own subnets with their real netmasks, from `ip -j addr` output (as parsed JSON).

    Loopback, link-local and interfaces that are down are left out: `--local` means "my lab network".
    """
    found: list[Network] = []
    for interface in interfaces if isinstance(interfaces, list) else []:
        flags = interface.get("flags") or []
        if "LOOPBACK" in flags or "UP" not in flags:
            continue
        for info in interface.get("addr_info") or []:
            if info.get("family") != "inet" or info.get("scope") != "global":
                continue
            network = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if network.prefixlen >= 32 or network.is_link_local or network in found:
                continue
            found.append(network)
    return found


def endpoint(address: str, port: int) -> str:
    """`10.0.0.5:50052`, `[fd00::5]:50052`."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
