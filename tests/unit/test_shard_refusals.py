"""A sharded model that the ready rpc-servers cannot hold is a failed request (exit 1), not "nothing reachable"."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

from sollol_cli.backends.rpc import HELLO_REPLY_SIZE
from sollol_cli.llamacpp.sdist import RPC_PROTOCOL_VERSION
from tests.harness.models import write_gguf
from tests.unit.cli_helpers import invoke

FREE_BYTES = 4096  # far less than the model and its KV cache


async def _tiny_rpc_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers HELLO (sollol's protocol), DEVICE_COUNT (1) and GET_DEVICE_MEMORY (4 KiB free)."""
    try:
        while header := await reader.read(1):
            await reader.readexactly(int.from_bytes(await reader.readexactly(8), "little"))  # the payload
            if header[0] == 14:
                reply = bytes(RPC_PROTOCOL_VERSION) + bytes(HELLO_REPLY_SIZE - 3)
            elif header[0] == 15:
                reply = struct.pack("<I", 1)
            elif header[0] == 11:
                reply = struct.pack("<QQ", FREE_BYTES, FREE_BYTES)
            else:
                break
            writer.write(struct.pack("<Q", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_too_little_memory_on_the_ready_rpc_servers_exits_1(tmp_path: Path) -> None:
    gguf = write_gguf(
        tmp_path / "big.gguf", "llama", block_count=2, embedding_length=64, attention__head_count=4, context_length=512
    )
    server = await asyncio.start_server(_tiny_rpc_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gone = _free_port()
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: short\nbackends:\n"
        f"  - {{name: small, kind: rpc, address: 127.0.0.1, port: {port}}}\n"
        f"  - {{name: gone, kind: rpc, address: 127.0.0.1, port: {gone}}}\n"
        f"models:\n  - {{name: big, mode: shard, gguf: {gguf}}}\n"
    )
    async with server:
        result = await asyncio.to_thread(invoke, "run", "big", "hi", "-f", str(path))
    assert result.exit_code == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: model 'big' needs "), line
    assert line.endswith(f"GiB; missing: gone (127.0.0.1:{gone}) is down"), line
