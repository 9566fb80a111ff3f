"""What `sollol discover` may scan (pure): CIDRs, refusals, ports, and --local's subnets from `ip -j addr`."""

from __future__ import annotations

import pytest

from sollol_cli.discovery.targets import endpoint, host_count, hosts, local_networks, parse_networks, parse_ports
from sollol_cli.errors import UsageError


@pytest.mark.parametrize(
    ("cidr", "first", "last", "count"),
    [
        ("192.168.1.0/24", "192.168.1.1", "192.168.1.254", 254),  # network and broadcast skipped
        ("10.0.0.5/32", "10.0.0.5", "10.0.0.5", 1),
        ("10.0.0.4/31", "10.0.0.4", "10.0.0.5", 2),
        ("127.0.0.1/30", "127.0.0.1", "127.0.0.2", 2),
        ("fd00::/120", "fd00::1", "fd00::ff", 255),
    ],
)
def test_hosts(cidr: str, first: str, last: str, count: int) -> None:
    addresses = list(hosts(parse_networks([cidr])))
    assert (addresses[0], addresses[-1], len(addresses)) == (first, last, count)


@pytest.mark.parametrize(
    "cidrs",
    [["10.1.0.0/24", "10.1.0.0/25"], ["10.1.0.0/25", "10.1.0.0/24", "10.1.0.7/32"], ["10.1.0.0/24", "10.1.0.0/24"]],
)
def test_overlapping_ranges_are_probed_once(cidrs: list[str]) -> None:
    networks = parse_networks(cidrs)
    addresses = list(hosts(networks))
    assert len(addresses) == len(set(addresses)) == host_count(networks) == 254


@pytest.mark.parametrize(
    "cidr", ["10.0.0.4/31", "10.0.0.5/32", "fd00::/120", "fd00::/126", "fd00::/127", "192.168.0.0/22"]
)
def test_host_count_matches_hosts(cidr: str) -> None:
    networks = parse_networks([cidr])
    assert host_count(networks) == len(list(hosts(networks)))


def test_a_forced_large_range_is_never_listed_in_memory() -> None:
    networks = parse_networks(["10.0.0.0/8"], force=True)
    assert host_count(networks) == 2**24 - 2
    assert next(hosts(networks)) == "10.0.0.1"  # lazy: the first address without building 16 million


def test_endpoint() -> None:
    assert (endpoint("10.0.0.5", 50052), endpoint("fd00::5", 8080)) == ("10.0.0.5:50052", "[fd00::5]:8080")


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.0/8", "10.0.0.0/8 is larger than a /16 (16777216 addresses); scan smaller ranges, or pass --force"),
        ("8.8.8.0/24", "8.8.8.0/24 is not a private or loopback range; sollol scans your own lab"),
        ("banana", "'banana' is not a CIDR; write it like 192.168.1.0/24"),
        ("10.0.0.300/24", "'10.0.0.300/24' is not a CIDR"),
        ("fd00::/64", "fd00::/64 has 18446744073709551616 addresses; IPv6 ranges of at most 256 only"),
    ],
)
def test_refusals(cidr: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_networks([cidr])
    assert str(info.value).startswith(message)
    assert info.value.exit_code == 2


def test_force_allows_large_and_public_ranges() -> None:
    assert [str(n) for n in parse_networks(["10.0.0.0/15", "8.8.8.0/30"], force=True)] == ["10.0.0.0/15", "8.8.8.0/30"]


def test_ports() -> None:
    assert parse_ports("11434, 8080,11434,50052") == (11434, 8080, 50052)
    with pytest.raises(UsageError, match="'http' is not a port number"):
        parse_ports("8080,http")
    with pytest.raises(UsageError, match="'70000' is not a port number"):
        parse_ports("70000")


IP_ADDR = [
    {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
    {"ifname": "eth0", "flags": ["BROADCAST", "UP", "LOWER_UP"], "addr_info": [
        {"family": "inet", "local": "192.168.1.23", "prefixlen": 24, "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
    ]},
    {"ifname": "wg0", "flags": ["POINTOPOINT", "UP"], "addr_info": [{"family": "inet", "local": "10.8.0.2", "prefixlen": 32, "scope": "global"}]},
    {"ifname": "eth1", "flags": ["BROADCAST"], "addr_info": [{"family": "inet", "local": "172.16.5.9", "prefixlen": 16, "scope": "global"}]},
    {"ifname": "br0", "flags": ["UP"], "addr_info": [{"family": "inet", "local": "10.20.30.1", "prefixlen": 22, "scope": "global"},
                                                   {"family": "inet", "local": "169.254.3.3", "prefixlen": 16, "scope": "global"}]},
]  # fmt: skip


def test_local_networks_use_the_real_netmasks() -> None:
    # loopback, down interfaces, /32 tunnels and link-local addresses are not "my lab network"
    assert [str(n) for n in local_networks(IP_ADDR)] == ["192.168.1.0/24", "10.20.28.0/22"]


def test_local_networks_tolerate_odd_input() -> None:
    assert local_networks({"not": "a list"}) == []
    assert local_networks([{"ifname": "x"}]) == []
