"""The connect scan on 127.0.0.1: open, refused and silent ports, the in-flight bound, progress events,
and the open-files limit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace

import pytest

from sollol_cli.discovery import scan
from sollol_cli.discovery.scan import scan_ports, usable_concurrency
from sollol_cli.events import Event, StepDone, StepProgress, StepStarted

LOOPBACK = "127.0.0.1"


@contextmanager
def listener(address: str = LOOPBACK) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@contextmanager
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:  # bound but not listening: connects are refused
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


@contextmanager
def dropping_port(address: str = LOOPBACK) -> Iterator[int]:
    """A listener whose accept queue is full: the kernel drops every new SYN, so connects time out."""
    with socket.socket() as sock, ExitStack() as stack:
        sock.bind((address, 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        stack.enter_context(socket.create_connection((address, port)))  # fills the queue of one
        yield port


async def test_open_refused_and_silent_ports() -> None:
    with listener() as open_port, closed_port() as refused, dropping_port() as dropping:
        result = await scan_ports([LOOPBACK], [open_port, refused, dropping], timeout=0.2)
    assert result.open == [(LOOPBACK, open_port)]
    # no answer on a port of an address that answered on others: reported as silent
    assert result.silent == [(LOOPBACK, dropping)]
    assert set(result.connect_ms) == {(LOOPBACK, open_port)}


async def test_an_address_that_answers_on_no_port_is_not_reported() -> None:
    with dropping_port("127.0.0.2") as port:
        result = await scan_ports(["127.0.0.2"], [port], timeout=0.2)
    assert (result.open, result.silent) == ([], [])


@pytest.mark.parametrize("concurrency", [4, 12])
async def test_never_more_than_the_concurrency_in_flight(concurrency: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every connect is held at a gate until `concurrency` of them are in flight together; then they go on to
    real listeners. No more ever start at once, and the bound is reached (so the count can tell)."""
    real_connect = asyncio.open_connection
    in_flight, most = 0, 0
    reached, gate = asyncio.Event(), asyncio.Event()

    async def gated_connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            if in_flight == concurrency:
                reached.set()
            await gate.wait()
            return await real_connect(host, port)
        finally:
            in_flight -= 1

    monkeypatch.setattr(asyncio, "open_connection", gated_connect)  # what scan calls
    with ExitStack() as stack:
        ports = [stack.enter_context(listener()) for _ in range(12)]
        probing = asyncio.create_task(scan_ports([LOOPBACK], ports, concurrency=concurrency, timeout=30))
        await reached.wait()
        for _ in range(20):  # let every worker that could start one more connect do so
            await asyncio.sleep(0)
        assert in_flight == concurrency
        gate.set()
        result = await probing
    assert result.open == [(LOOPBACK, port) for port in sorted(ports)]
    assert most == concurrency


async def test_progress_events_count_probes_and_open_ports() -> None:
    seen: list[Event] = []
    with listener() as a, listener() as b, closed_port() as c:
        result = await scan_ports([LOOPBACK], [a, b, c], total_addresses=1, timeout=0.2, reporter=seen.append)
    assert result.addresses == 1
    assert seen[0] == StepStarted("scan", "probing", "1 addresses x 3 ports")
    last = [e for e in seen if isinstance(e, StepProgress)][-1]
    assert (last.completed, last.total, last.detail) == (3, 3, "3/3 probed, 2 open")
    assert seen[-1] == StepDone("scan", "probing", "2 open ports")


def fake_limits(soft: int, hard: int) -> SimpleNamespace:
    state = {"soft": soft}

    def setrlimit(_which: int, limits: tuple[int, int]) -> None:
        if limits[0] > hard:
            raise ValueError("not allowed")
        state["soft"] = limits[0]

    return SimpleNamespace(
        RLIMIT_NOFILE=7,
        RLIM_INFINITY=-1,
        getrlimit=lambda _which: (state["soft"], hard),
        setrlimit=setrlimit,
        state=state,
    )


def test_the_open_files_limit_is_raised_when_it_can_be(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = fake_limits(256, 4096)
    monkeypatch.setattr(scan, "resource", limits)
    assert usable_concurrency(512) == 512
    assert limits.state["soft"] == 512 + scan.FD_RESERVE


def test_concurrency_is_capped_by_a_hard_open_files_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "resource", fake_limits(256, 300))
    assert usable_concurrency(512) == 300 - scan.FD_RESERVE


async def test_a_capped_scan_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "resource", fake_limits(100, 100))
    seen: list[Event] = []
    with listener() as port:
        result = await scan_ports([LOOPBACK], [port], concurrency=512, reporter=seen.append)
    assert result.open == [(LOOPBACK, port)]
    assert any(getattr(e, "message", "") == "open-files limit allows only 36 connects at once, not 512" for e in seen)
