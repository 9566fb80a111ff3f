"""The llama.cpp rpc-server wire protocol, just enough to probe a node: version, devices and their memory.

Raw TCP, little-endian. Request = `cmd:u8 | size:u64 | payload`; reply = `size:u64 | payload`. HELLO must be
the first command on a connection. rpc-server serves one client at a time: while a coordinator is attached,
the kernel still accepts new connections but nothing answers them, so "connected, no HELLO reply" means busy.

A probe that gives up on a connection with a request outstanding closes it with a reset, not a FIN: a queued
connection that sent HELLO and was closed normally kills rpc-server with SIGPIPE once it gets to it (it writes
the reply to a closed socket; measured on 0c1e57098). After a reset its send fails with ECONNRESET instead.
Each busy probe leaves its dead connection in the server's accept queue (backlog 1, room for two) until the
attached client leaves; once it is full, new connects time out and the probe says "down" (error "timed out",
where a stopped server gives "Connection refused"). Callers should treat a timeout after "busy" as still busy.

The encoders and decoders are pure (unit-tested byte by byte); `probe_rpc` is the only I/O.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

from sollol_cli.llamacpp.sdist import RPC_PROTOCOL_VERSION

CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15

HELLO_CAPABILITIES = bytes(24)  # protocol v7 connection capabilities; all zero = plain TCP
HELLO_REPLY_SIZE = 28  # v7: major, minor, patch, pad, then capabilities
MAX_HELLO_REPLY = 1024  # a larger declared size means the peer is not an rpc-server
MAX_DEVICES = 256

_REQUEST_HEADER = struct.Struct("<BQ")
_REPLY_HEADER = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_MEMORY = struct.Struct("<QQ")
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST

RpcState = Literal["ready", "busy", "down", "unknown"]


class ProtocolError(ValueError):
    """The peer answered, but not the way an rpc-server does."""


@dataclass(frozen=True)
class RpcDevice:
    index: int
    free: int  # bytes
    total: int  # bytes


@dataclass(frozen=True)
class RpcProbe:
    """What one probe saw. `latency_ms` is connect + HELLO round trip (None without a HELLO reply)."""

    state: RpcState
    protocol: tuple[int, int, int] | None = None
    devices: tuple[RpcDevice, ...] = ()
    latency_ms: float | None = None
    error: str | None = None


def encode_request(command: int, payload: bytes = b"") -> bytes:
    return _REQUEST_HEADER.pack(command, len(payload)) + payload


def encode_hello() -> bytes:
    return encode_request(CMD_HELLO, HELLO_CAPABILITIES)


def encode_device_count() -> bytes:
    return encode_request(CMD_DEVICE_COUNT)


def encode_get_device_memory(index: int) -> bytes:
    return encode_request(CMD_GET_DEVICE_MEMORY, _U32.pack(index))


def decode_reply_size(header: bytes, *, minimum: int, maximum: int) -> int:
    """The payload size from an 8-byte reply header, which must lie in [minimum, maximum]."""
    if len(header) != _REPLY_HEADER.size:
        raise ProtocolError(f"reply header has {len(header)} bytes, expected {_REPLY_HEADER.size}")
    (size,) = _REPLY_HEADER.unpack(header)
    if not minimum <= size <= maximum:
        expected = str(minimum) if minimum == maximum else f"{minimum}..{maximum}"
        raise ProtocolError(f"reply declares {size} bytes, expected {expected}")
    return int(size)


def decode_hello(payload: bytes) -> tuple[int, int, int]:
    """(major, minor, patch). Other protocol versions may send a different size; the version is always first."""
    if len(payload) < 3:
        raise ProtocolError(f"HELLO reply has {len(payload)} bytes, expected {HELLO_REPLY_SIZE}")
    return payload[0], payload[1], payload[2]


def decode_device_count(payload: bytes) -> int:
    if len(payload) != _U32.size:
        raise ProtocolError(f"DEVICE_COUNT reply has {len(payload)} bytes, expected {_U32.size}")
    (count,) = _U32.unpack(payload)
    if count > MAX_DEVICES:
        raise ProtocolError(f"DEVICE_COUNT reply says {count} devices")
    return int(count)


def decode_device_memory(index: int, payload: bytes) -> RpcDevice:
    if len(payload) != _MEMORY.size:
        raise ProtocolError(f"GET_DEVICE_MEMORY reply has {len(payload)} bytes, expected {_MEMORY.size}")
    free, total = _MEMORY.unpack(payload)
    return RpcDevice(index, int(free), int(total))


@dataclass(frozen=True)
class BannerDevice:
    """A device as rpc-server's start banner names it: `Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, ...)`.
    The protocol reports only memory per index; the banner lists the same devices in the same order."""

    name: str  # CPU, Vulkan0, CUDA0, ...
    description: str
    total: int  # bytes
    free: int  # bytes


_BANNER_DEVICE = re.compile(
    r"^\s+(?P<name>[A-Za-z][\w.-]*): (?P<desc>.*) \((?P<total>\d+) MiB, (?P<free>\d+) MiB free\)$"
)


def parse_banner_devices(text: str) -> tuple[BannerDevice, ...]:
    """The `Devices:` block of rpc-server's start banner (on stdout, so block-buffered when it goes to a file:
    it reaches a log only once more output follows or the process exits)."""
    devices: list[BannerDevice] = []
    in_block = False
    for line in text.splitlines():
        if line.strip() == "Devices:":
            in_block, devices = True, []  # a restarted server appends a new banner to the log: the last one counts
        elif in_block:
            match = _BANNER_DEVICE.match(line.rstrip())
            if match is None:
                in_block = False
                continue
            total, free = int(match["total"]) * 2**20, int(match["free"]) * 2**20
            devices.append(BannerDevice(match["name"], match["desc"], total, free))
    return tuple(devices)


def speaks_device_commands(protocol: tuple[int, int, int]) -> bool:
    """Command numbers are only known for sollol's protocol major; never send them to another one."""
    return protocol[0] == RPC_PROTOCOL_VERSION[0]


async def _reply(reader: asyncio.StreamReader, timeout: float, *, minimum: int, maximum: int) -> bytes:
    async with asyncio.timeout(timeout):
        size = decode_reply_size(await reader.readexactly(_REPLY_HEADER.size), minimum=minimum, maximum=maximum)
        return await reader.readexactly(size)


async def probe_rpc(host: str, port: int, *, connect_timeout: float = 1.0, reply_timeout: float = 1.0) -> RpcProbe:
    """HELLO, then device count and memory. Never raises for network trouble: the state says what happened."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(connect_timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return RpcProbe("down", error=f"connect to {host}:{port} timed out after {connect_timeout:g}s")
    except OSError as exc:
        return RpcProbe("down", error=f"connect to {host}:{port} failed: {_reason(exc)}")
    protocol: tuple[int, int, int] | None = None
    latency: float | None = None
    answered = False  # every request got its reply: a normal close is safe
    try:
        writer.write(encode_hello())
        await writer.drain()
        try:
            hello = await _reply(reader, reply_timeout, minimum=3, maximum=MAX_HELLO_REPLY)
        except TimeoutError:
            # rpc-server serves one client at a time; a queued connection gets no answer
            return RpcProbe("busy", error=f"no HELLO reply within {reply_timeout:g}s (another client is attached)")
        protocol = decode_hello(hello)
        latency = (time.monotonic() - started) * 1000
        if not speaks_device_commands(protocol):
            version = ".".join(map(str, protocol))
            answered = True
            return RpcProbe("ready", protocol, (), latency, f"protocol {version}: devices not queried")
        writer.write(encode_device_count())
        await writer.drain()
        count = decode_device_count(await _reply(reader, reply_timeout, minimum=4, maximum=4))
        devices = []
        for index in range(count):
            writer.write(encode_get_device_memory(index))
            await writer.drain()
            devices.append(decode_device_memory(index, await _reply(reader, reply_timeout, minimum=16, maximum=16)))
        answered = True
        return RpcProbe("ready", protocol, tuple(devices), latency)
    except ProtocolError as exc:
        return RpcProbe("unknown", protocol, (), latency, f"not an rpc-server reply: {exc}")
    except asyncio.IncompleteReadError as exc:
        got = f"after {len(exc.partial)} bytes" if exc.partial else "without a reply"
        return RpcProbe("unknown", protocol, (), latency, f"connection closed {got}")
    except TimeoutError:
        return RpcProbe("unknown", protocol, (), latency, f"no reply within {reply_timeout:g}s after HELLO")
    except OSError as exc:
        return RpcProbe("unknown", protocol, (), latency, f"connection failed: {_reason(exc)}")
    finally:
        if not answered:
            _reset_on_close(writer)
        writer.close()
        with suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()


def _reset_on_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


def _reason(exc: OSError) -> str:
    """The errno text ("Connection refused"), not asyncio's "Connect call failed ('10.0.0.5', 50052)"."""
    if exc.errno is not None:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__
