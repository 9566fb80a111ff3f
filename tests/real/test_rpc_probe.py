"""probe_rpc against a real rpc-server on loopback: ready (protocol 7.0.0, devices with memory), busy while
another client is attached, down on a closed port, unknown against something that is not an rpc-server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sollol_cli.backends.rpc import decode_hello, decode_reply_size, encode_hello, probe_rpc
from tests.harness.llama import ServerFailed, ServerGroup, ServerProcess, free_port, start_rpc_server

pytestmark = pytest.mark.real


async def test_ready_server_reports_protocol_and_device_memory(rpc_server: ServerProcess) -> None:
    probe = await probe_rpc(rpc_server.host, rpc_server.port)
    assert probe.state == "ready", probe
    assert probe.protocol == (7, 0, 0)
    assert probe.error is None
    assert len(probe.devices) >= 1
    assert [device.index for device in probe.devices] == list(range(len(probe.devices)))
    cpu = probe.devices[0]
    assert 0 < cpu.free <= cpu.total
    assert cpu.total > 64 * 2**20  # the CPU device reports the host's memory
    assert probe.latency_ms is not None and probe.latency_ms < 1000


async def test_attached_client_makes_it_busy_and_it_recovers(rpc_server: ServerProcess) -> None:
    holder = socket.create_connection((rpc_server.host, rpc_server.port), timeout=2)
    try:
        holder.sendall(encode_hello())  # a coordinator's handshake; the server now serves only this client
        size = decode_reply_size(holder.recv(8, socket.MSG_WAITALL), minimum=3, maximum=1024)
        assert decode_hello(holder.recv(size, socket.MSG_WAITALL)) == (7, 0, 0)
        for _ in range(2):  # two dead connections fill the accept queue (backlog 1)
            busy = await probe_rpc(rpc_server.host, rpc_server.port, reply_timeout=0.5)
            assert busy.state == "busy", busy
            assert busy.protocol is None and busy.devices == ()
    finally:
        holder.close()
    # once the client leaves, the server answers again: the busy probes' queued HELLOs, closed with a reset,
    # do not kill it (closed normally, the server dies of SIGPIPE answering them)
    deadline = time.monotonic() + 5
    while (probe := await probe_rpc(rpc_server.host, rpc_server.port)).state != "ready":
        assert time.monotonic() < deadline, probe
        await asyncio.sleep(0.1)
    assert probe.protocol == (7, 0, 0)
    assert rpc_server.process.poll() is None


async def test_closed_port_is_down() -> None:
    port = free_port()
    probe = await probe_rpc("127.0.0.1", port)
    assert probe.state == "down"
    assert probe.error is not None and "Connection refused" in probe.error


@pytest.fixture
async def garbage_listener() -> AsyncIterator[int]:
    """A plain TCP service that greets every connection with a line of text, like many daemons do."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mail.example ESMTP ready\r\n")
        await writer.drain()
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_other_service_is_unknown(garbage_listener: int) -> None:
    probe = await probe_rpc("127.0.0.1", garbage_listener)
    assert probe.state == "unknown"
    assert probe.protocol is None
    assert probe.error is not None and probe.error.startswith("not an rpc-server reply: reply declares")


async def test_the_real_server_after_a_probe_of_each_kind_still_serves(
    rpc_server: ServerProcess, garbage_listener: int
) -> None:
    """Probes of other ports and garbage in between leave the server's state alone."""
    for _ in range(3):
        assert (await probe_rpc(rpc_server.host, rpc_server.port)).state == "ready"
        assert (await probe_rpc("127.0.0.1", garbage_listener)).state == "unknown"
    with socket.create_connection((rpc_server.host, rpc_server.port), timeout=2) as sock:
        sock.sendall(b"\xff" * 16)  # garbage as first bytes: the server drops this connection
        sock.settimeout(2)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:  # closed with our garbage unread
            pass
    assert (await probe_rpc(rpc_server.host, rpc_server.port)).state == "ready"


def test_server_that_cannot_bind_exits_zero_and_the_harness_says_so(llama_servers: ServerGroup) -> None:
    """Why readiness is a HELLO: rpc-server prints its banner and exits 0 when the port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        log = llama_servers.log_dir / "taken.log"
        with pytest.raises(ServerFailed, match=f"rpc-server on 127.0.0.1:{port} exited with 0 before it was ready"):
            start_rpc_server(llama_servers.bins.rpc_server, log, port=port, timeout=10)
        direct = subprocess.run(
            [str(llama_servers.bins.rpc_server), "-p", str(port)], capture_output=True, timeout=10, check=False
        )
        assert direct.returncode == 0


async def test_server_is_busy_while_a_coordinator_is_attached(llama_servers: ServerGroup, tiny_gguf: Path) -> None:
    rpc = llama_servers.rpc_server()
    coordinator = llama_servers.llama_server(tiny_gguf, rpc=[rpc.endpoint])
    probe = await probe_rpc(rpc.host, rpc.port, reply_timeout=0.5)
    assert probe.state == "busy", probe
    coordinator.stop()
    deadline = time.monotonic() + 10
    while (probe := await probe_rpc(rpc.host, rpc.port)).state != "ready":
        assert time.monotonic() < deadline, probe
        await asyncio.sleep(0.1)
    assert rpc.process.poll() is None
