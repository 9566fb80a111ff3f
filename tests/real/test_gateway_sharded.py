"""`sollol serve` with a sharded model: the gateway starts a coordinator over two real rpc-servers on first
use, answers exactly as a single llama-server would (greedy), lists it in /api/ps, and stops it on exit;
`keep_alive` (what `ollama stop` and every "unload" button send) stops it and frees the rpc-servers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import ollama
import pytest

from sollol_cli.backends.base import BackendRef, collect
from sollol_cli.backends.http import close_session
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.backends.rpc import probe_rpc
from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home
from tests.harness._gateway import serving as gateway
from tests.harness.llama import ServerGroup, ServerProcess

pytestmark = [pytest.mark.real, pytest.mark.slow]

GREEDY = {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": 16}
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]


def sharded_cluster(rpcs: list[ServerProcess], gguf: Path) -> Cluster:
    return Cluster.model_validate(
        {
            "name": "shardgw",
            "backends": [
                {"name": f"rpc{i}", "kind": "rpc", "address": r.host, "port": r.port} for i, r in enumerate(rpcs)
            ],
            "models": [{"name": "tiny", "mode": "shard", "gguf": str(gguf), "context": 1024}],
        }
    )


async def test_gateway_serves_a_sharded_model_and_stops_its_coordinator(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    single = llama_servers.llama_server(Path(tiny_gguf), context=1024)
    cluster = sharded_cluster(rpcs, tiny_gguf)
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
            p.message.content or ""
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


def when(value: datetime) -> float:
    return value.astimezone(UTC).timestamp()


async def test_keep_alive_0_stops_the_coordinator_and_frees_the_rpc_servers(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    home = coordinator_home(settings, "shardgw")
    async with gateway(sharded_cluster(rpcs, tiny_gguf), settings) as url:
        client = ollama.AsyncClient(host=url, timeout=300)
        before = time.time()
        reply = await client.chat(model="tiny", messages=MESSAGES, options=GREEDY, keep_alive=-1)
        assert reply.message.content and reply.done_reason in ("stop", "length")
        [record] = coord.all_records(home)
        assert record.keep_alive < 0 and coord.alive(record)
        [loaded] = (await client.ps()).models
        assert loaded.model == "tiny:latest" and loaded.expires_at is not None
        assert datetime.fromtimestamp(before, UTC).year + 292 <= loaded.expires_at.year  # for ever, as Ollama shows it

        # `ollama stop tiny`: an empty generate with keep_alive 0
        stopped = await client.generate(model="tiny", keep_alive=0)
        assert (stopped.done, stopped.done_reason, stopped.response) == (True, "unload", "")
        assert (await client.ps()).models == []
        assert coord.all_records(home) == [] and not coord.alive(record)
        for server in rpcs:  # free again: each answers a new client (an rpc-server serves one at a time)
            probe = await probe_rpc(server.host, server.port, connect_timeout=5, reply_timeout=5)
            assert probe.state == "ready", probe.error

        # loaded again for 10 minutes, then the "unload" button of chat clients: empty messages, keep_alive 0
        answer = await client.generate(model="tiny", prompt="The sea", options=GREEDY, keep_alive="10m")
        assert answer.response and answer.done_reason in ("stop", "length")
        [record] = coord.all_records(home)
        assert record.keep_alive == 600
        [loaded] = (await client.ps()).models
        assert loaded.expires_at is not None and abs(when(loaded.expires_at) - (record.last_used + 600)) < 1
        unloaded = await client.chat(model="tiny", messages=[], keep_alive=0)
        assert (unloaded.done_reason, unloaded.message.content) == ("unload", "")
        assert (await client.ps()).models == []
        assert coord.all_records(home) == [] and not coord.alive(record)
