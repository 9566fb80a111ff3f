"""The rpc-server wire protocol: pure encoders/decoders byte by byte, then `probe_rpc` over loopback against
scripted peers (a well-behaved fake rpc-server, a silent one, garbage, a closed port)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from sollol_cli.backends.rpc import (
    HELLO_REPLY_SIZE,
    BannerDevice,
    ProtocolError,
    RpcDevice,
    decode_device_count,
    decode_device_memory,
    decode_hello,
    decode_reply_size,
    encode_device_count,
    encode_get_device_memory,
    encode_hello,
    encode_request,
    parse_banner_devices,
    probe_rpc,
    speaks_device_commands,
)

GiB = 2**30


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (encode_hello(), bytes([14]) + u64(24) + bytes(24)),
        (encode_device_count(), bytes([15]) + u64(0)),
        (encode_get_device_memory(0), bytes([11]) + u64(4) + bytes(4)),
        (encode_get_device_memory(3), bytes([11]) + u64(4) + b"\x03\x00\x00\x00"),
        (encode_get_device_memory(0x01020304), bytes([11]) + u64(4) + b"\x04\x03\x02\x01"),
        (encode_request(200, b"xyz"), bytes([200]) + u64(3) + b"xyz"),
    ],
)
def test_requests_are_cmd_size_payload_little_endian(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


@pytest.mark.parametrize(
    ("header", "minimum", "maximum", "expected"),
    [(u64(28), 3, 1024, 28), (u64(4), 4, 4, 4), (u64(3), 3, 1024, 3), (u64(1024), 3, 1024, 1024)],
)
def test_reply_size_in_range(header: bytes, minimum: int, maximum: int, expected: int) -> None:
    assert decode_reply_size(header, minimum=minimum, maximum=maximum) == expected


@pytest.mark.parametrize(
    ("header", "minimum", "maximum", "message"),
    [
        (b"HTTP/1.1", 3, 1024, "reply declares"),  # an HTTP server answering our bytes
        (u64(2), 3, 1024, "reply declares 2 bytes, expected 3..1024"),
        (u64(1025), 3, 1024, "reply declares 1025 bytes"),
        (u64(5), 4, 4, "reply declares 5 bytes, expected 4"),
        (b"\x1c\x00\x00", 3, 1024, "reply header has 3 bytes, expected 8"),
        (b"", 3, 1024, "reply header has 0 bytes"),
    ],
)
def test_reply_size_rejects_garbage_and_short_headers(header: bytes, minimum: int, maximum: int, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_reply_size(header, minimum=minimum, maximum=maximum)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes([7, 0, 0, 0]) + bytes(24), (7, 0, 0)),
        (bytes([7, 1, 2, 0]) + bytes(24), (7, 1, 2)),
        (bytes([3, 0, 0]), (3, 0, 0)),  # older servers send just the version
    ],
)
def test_hello_reply_starts_with_the_version(payload: bytes, expected: tuple[int, int, int]) -> None:
    assert decode_hello(payload) == expected


@pytest.mark.parametrize("payload", [b"", b"\x07", b"\x07\x00"])
def test_short_hello_reply_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match=f"HELLO reply has {len(payload)} bytes, expected {HELLO_REPLY_SIZE}"):
        decode_hello(payload)


def test_device_count_and_memory() -> None:
    assert decode_device_count(b"\x02\x00\x00\x00") == 2
    assert decode_device_count(bytes(4)) == 0
    free, total = 3 * GiB + 5, 8 * GiB
    assert decode_device_memory(1, struct.pack("<QQ", free, total)) == RpcDevice(1, free, total)


@pytest.mark.parametrize(
    ("decode", "payload", "message"),
    [
        (decode_device_count, b"\x01\x00", "DEVICE_COUNT reply has 2 bytes, expected 4"),
        (decode_device_count, b"\xff\xff\xff\xff", "DEVICE_COUNT reply says 4294967295 devices"),
        (lambda p: decode_device_memory(0, p), bytes(8), "GET_DEVICE_MEMORY reply has 8 bytes, expected 16"),
        (lambda p: decode_device_memory(0, p), bytes(17), "GET_DEVICE_MEMORY reply has 17 bytes, expected 16"),
    ],
)
def test_malformed_device_replies(decode: Callable[[bytes], object], payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(payload)


@pytest.mark.parametrize(("protocol", "expected"), [((7, 0, 0), True), ((7, 3, 1), True), ((6, 0, 0), False)])
def test_device_commands_only_for_the_same_major(protocol: tuple[int, int, int], expected: bool) -> None:
    assert speaks_device_commands(protocol) is expected


# --- probe_rpc over loopback against scripted peers -------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def peer(handler: Handler) -> AsyncIterator[tuple[int, list[bytes | str]]]:
    """A loopback TCP server running `handler` per connection; yields (port, what each connection sent after the
    handler finished, or "reset"), which shows how the probe closed its socket (reading ends only when it did).
    Leaving the block waits until every connection has been read to its end."""
    leftovers: list[bytes | str] = []
    finished: list[asyncio.Event] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done = asyncio.Event()
        finished.append(done)
        try:
            await handler(reader, writer)
            async with asyncio.timeout(3):
                leftovers.append(await reader.read())
        except ConnectionResetError:
            leftovers.append("reset")
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield port, leftovers
        async with asyncio.timeout(10):
            for done in finished:
                await done.wait()


def fake_rpc_server(version: bytes, devices: list[tuple[int, int]], seen: list[int]) -> Handler:
    """Speaks protocol v7 for HELLO, DEVICE_COUNT and GET_DEVICE_MEMORY; records the commands it got."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            command = await reader.read(1)
            if not command:
                return
            seen.append(command[0])
            size = int.from_bytes(await reader.readexactly(8), "little")
            payload = await reader.readexactly(size)
            if command[0] == 14:
                assert payload == bytes(24)
                reply = version + bytes(HELLO_REPLY_SIZE - len(version))
            elif command[0] == 15:
                reply = struct.pack("<I", len(devices))
            elif command[0] == 11:
                reply = struct.pack("<QQ", *devices[int.from_bytes(payload, "little")])
            else:
                return
            writer.write(u64(len(reply)) + reply)
            await writer.drain()

    return handler


async def test_probe_reads_version_and_every_device() -> None:
    devices = [(3 * GiB, 4 * GiB), (1 * GiB, 2 * GiB)]
    seen: list[int] = []
    async with peer(fake_rpc_server(bytes([7, 0, 0, 0]), devices, seen)) as (port, leftovers):
        probe = await probe_rpc("127.0.0.1", port)
    assert seen == [14, 15, 11, 11]
    assert probe.state == "ready"
    assert probe.protocol == (7, 0, 0)
    assert probe.devices == (RpcDevice(0, 3 * GiB, 4 * GiB), RpcDevice(1, 1 * GiB, 2 * GiB))
    assert probe.error is None
    assert probe.latency_ms is not None and probe.latency_ms > 0
    assert leftovers == [b""]  # the probe closed its connection


async def test_other_major_version_is_reported_without_device_commands() -> None:
    seen: list[int] = []
    async with peer(fake_rpc_server(bytes([8, 0, 0, 0]), [(1, 2)], seen)) as (port, leftovers):
        probe = await probe_rpc("127.0.0.1", port)
    assert (probe.state, probe.protocol, probe.devices) == ("ready", (8, 0, 0), ())
    assert probe.error == "protocol 8.0.0: devices not queried"
    assert seen == [14]  # command numbers of another major are unknown: nothing after HELLO
    assert leftovers == [b""]


async def test_silent_peer_is_busy() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(encode_hello()))

    async with peer(silent) as (port, leftovers):
        probe = await probe_rpc("127.0.0.1", port, reply_timeout=0.2)
    assert probe.state == "busy"
    assert probe.protocol is None and probe.latency_ms is None
    assert probe.error == "no HELLO reply within 0.2s (another client is attached)"
    # a reset, not a FIN: rpc-server dies of SIGPIPE answering a queued HELLO whose client closed normally
    assert leftovers == ["reset"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not an rpc-server reply: reply declares"),
        (u64(2) + b"\x07\x00", "not an rpc-server reply: reply declares 2 bytes"),
        (b"\x1c\x00", "connection closed after 2 bytes"),
        (b"", "connection closed without a reply"),
        (u64(28) + b"\x07", "connection closed after 1 bytes"),
    ],
)
async def test_garbage_or_short_answers_are_unknown(answer: bytes, error: str) -> None:
    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(encode_hello()))  # read it first: closing with unread data sends a reset
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with peer(answers) as (port, _):
        probe = await probe_rpc("127.0.0.1", port, reply_timeout=1.0)
    assert probe.state == "unknown"
    assert probe.error is not None and probe.error.startswith(error), probe.error


async def test_no_reply_after_hello_is_unknown_not_busy() -> None:
    async def hello_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(encode_hello()))
        writer.write(u64(HELLO_REPLY_SIZE) + bytes([7, 0, 0]) + bytes(HELLO_REPLY_SIZE - 3))
        await writer.drain()

    async with peer(hello_only) as (port, leftovers):
        probe = await probe_rpc("127.0.0.1", port, reply_timeout=0.2)
    assert (probe.state, probe.protocol) == ("unknown", (7, 0, 0))
    assert probe.error == "no reply within 0.2s after HELLO"
    assert leftovers == ["reset"]  # DEVICE_COUNT was outstanding


async def test_closed_port_is_down() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    probe = await probe_rpc("127.0.0.1", port)
    assert probe.state == "down"
    assert probe.error == f"connect to 127.0.0.1:{port} failed: Connection refused"


CPU_BANNER = """Starting RPC server v7.0.0
  endpoint       : 127.0.0.1:50999
  local cache    : n/a
Devices:
  CPU: AMD EPYC (24105 MiB, 24105 MiB free)
  transport      : TCP
"""
# measured: shared/reference/gpu-builds.md (the Vulkan build on lavapipe)
VULKAN_BANNER = """Starting RPC server v7.0.0
  endpoint       : 10.0.0.1:50052
  local cache    : /root/.cache/llama.cpp/rpc/
Devices:
  Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)
  Vulkan1: NVIDIA GeForce RTX 3090 (24576 MiB, 23000 MiB free)
"""


VULKAN_DEVICES = [
    BannerDevice("Vulkan0", "llvmpipe (LLVM 15.0.6, 256 bits)", 2048 << 20, 2048 << 20),
    BannerDevice("Vulkan1", "NVIDIA GeForce RTX 3090", 24576 << 20, 23000 << 20),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(CPU_BANNER, [BannerDevice("CPU", "AMD EPYC", 24105 << 20, 24105 << 20)], id="cpu"),
        pytest.param(VULKAN_BANNER, VULKAN_DEVICES, id="vulkan-two-devices"),
        pytest.param(CPU_BANNER + "accepted client\n" + VULKAN_BANNER, VULKAN_DEVICES, id="restarted-last-one-counts"),
        pytest.param("Starting RPC server v7.0.0\n", [], id="still-buffered"),
        pytest.param("", [], id="empty"),
    ],
)
def test_banner_devices(text: str, expected: list[BannerDevice]) -> None:
    assert list(parse_banner_devices(text)) == expected
