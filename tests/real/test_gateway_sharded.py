"""`sollol serve` with a sharded model: the gateway starts a coordinator over two real rpc-servers on first
use, answers exactly as a single llama-server would (greedy), lists it in /api/ps, and stops it on exit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import ollama
import pytest

from sollol_cli.backends.base import BackendRef, collect
from sollol_cli.backends.http import close_session
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home
from tests.harness.llama import ServerGroup

pytestmark = [pytest.mark.real, pytest.mark.slow]

GREEDY = {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": 16}
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


async def test_gateway_serves_a_sharded_model_and_stops_its_coordinator(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    single = llama_servers.llama_server(Path(tiny_gguf), context=1024)
    cluster = Cluster.model_validate(
        {
            "name": "shardgw",
            "backends": [
                {"name": f"rpc{i}", "kind": "rpc", "address": r.host, "port": r.port} for i, r in enumerate(rpcs)
            ],
            "models": [{"name": "tiny", "mode": "shard", "gguf": str(tiny_gguf), "context": 1024}],
        }
    )
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    stop = asyncio.Event()
    listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(cluster, settings, ServeOptions("127.0.0.1", 0, grace_s=5), stop, on_listening=listening.set_result)
    )
    home = coordinator_home(settings, "shardgw")
    try:
        url = (await asyncio.wait_for(listening, 60)).url
        client = ollama.AsyncClient(host=url, timeout=300)
        assert [m.model for m in (await client.list()).models] == ["tiny:latest"]  # from the GGUF
        shown = await client.show("tiny")
        assert shown.details.family == "llama" and shown.modelinfo["llama.block_count"] == 8
        reply = await client.chat(model="tiny", messages=MESSAGES, options=GREEDY)
        expected = await collect(
            LlamaServerBackend(BackendRef("single", "llamacpp", single.host, single.port)).chat(
                {"model": "tiny", "messages": MESSAGES, "options": GREEDY}
            )
        )
        assert reply.message.content == expected["message"]["content"] != ""
        streamed = [
            p.message.content
            async for p in await client.chat(model="tiny", messages=MESSAGES, options=GREEDY, stream=True)
        ]
        assert "".join(streamed) == reply.message.content  # the warm coordinator, reused
        [record] = coord.all_records(home)
        assert coord.alive(record)
        loaded = (await client.ps()).models
        assert [m.model for m in loaded] == ["tiny:latest"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await close_session()
    assert coord.all_records(home) == []  # serve stopped the coordinator it started
    assert not coord.alive(record)
