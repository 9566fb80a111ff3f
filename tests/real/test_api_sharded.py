"""The Python API with a sharded model over two real rpc-servers: the coordinator it starts answers as a
single llama-server would (greedy), and closing with `stop_on_close` stops it, as `sollol serve` does;
without it the coordinator stays warm until `keep_alive: 0` unloads it, as after `sollol run`."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sollol_cli.api import AsyncCluster, SyncCluster
from sollol_cli.backends.base import BackendRef, collect
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home
from tests.harness.llama import ServerGroup
from tests.real.test_gateway_sharded import GREEDY, MESSAGES, sharded_cluster

pytestmark = [pytest.mark.real, pytest.mark.slow]


async def test_async_api_shards_and_stops_its_coordinator_on_close(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    single = llama_servers.llama_server(Path(tiny_gguf), context=1024)
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    home = coordinator_home(settings, "shardgw")
    expected = await collect(
        LlamaServerBackend(BackendRef("single", "llamacpp", single.host, single.port)).chat(
            {"model": "tiny", "messages": MESSAGES, "options": GREEDY}
        )
    )
    async with AsyncCluster(sharded_cluster(rpcs, tiny_gguf), settings=settings, stop_on_close=True) as cluster:
        reply = await cluster.chat("tiny", MESSAGES, options=GREEDY)
        assert reply.message.content == expected["message"]["content"] != ""
        assert reply.sollol is not None and (reply.sollol.mode, reply.sollol.backend) == ("shard", "coordinator:tiny")
        streamed = [p.message.content async for p in await cluster.chat("tiny", MESSAGES, options=GREEDY, stream=True)]
        assert "".join(c or "" for c in streamed) == reply.message.content  # the warm coordinator, reused
        [record] = coord.all_records(home)
        assert coord.alive(record)
        assert [m.model for m in (await cluster.ps()).models] == ["tiny:latest"]
    assert coord.all_records(home) == []
    assert not coord.alive(record)


def test_sync_api_leaves_the_coordinator_warm_until_keep_alive_0(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    home = coordinator_home(settings, "shardgw")
    manifest = sharded_cluster(rpcs, tiny_gguf)
    with SyncCluster(manifest, settings=settings) as cluster:
        assert cluster.generate("tiny", "The sea", options=GREEDY).response
    [record] = coord.all_records(home)
    try:
        assert coord.alive(record)  # warm for its keep-alive, as after `sollol run`
        with SyncCluster(manifest, settings=settings) as cluster:  # `ollama stop tiny`: reused, then unloaded
            stopped = cluster.generate("tiny", keep_alive=0)
        assert (stopped.done, stopped.done_reason) == (True, "unload")
        assert coord.all_records(home) == [] and not coord.alive(record)
    finally:
        if coord.alive(record):  # a failed assertion above must not leave it running
            os.kill(record.pid, signal.SIGTERM)
