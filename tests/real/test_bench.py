"""`sollol bench` on a real llama-server node and on a model sharded over two real rpc-servers: each row comes
from real generations (tokens counted by llama.cpp), the sharded one through its coordinator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from sollol_cli.sharding.lifecycle import stop_all
from tests.harness.llama import ServerGroup
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real


def test_bench_a_llama_server_and_a_sharded_model(llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path) -> None:
    node = llama_servers.llama_server(tiny_gguf, context=1024)
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    rpc_rows = "".join(
        f"  - {{name: rpc{i}, kind: rpc, address: {r.host}, port: {r.port}}}\n" for i, r in enumerate(rpcs)
    )
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: benchreal\n"
        f"llama_cpp: {{bin_dir: {llama_servers.bins.llama_server.parent}}}\n"
        "nodes:\n"
        f"  - {{name: n1, address: 127.0.0.1, transport: local, llamacpp: {{port: {node.port}, model: {tiny_gguf}}}}}\n"
        f"backends:\n{rpc_rows}"
        f"models:\n  - {{name: big, mode: shard, gguf: {tiny_gguf}, context: 1024}}\n"
    )
    model = tiny_gguf.stem
    try:
        result = invoke("bench", model, "big", "-c", "2", "-n", "2", "-t", "8", "--json", "-f", str(path))
    finally:
        stop_all(Settings(), "benchreal")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["model"], r["backend"], r["mode"]) for r in rows] == [
        (model, "n1", "distribute"),
        ("big", "coordinator:big", "shard"),
    ]
    for row in rows:
        for level in (row["single"], row["concurrent"]):
            assert level["errors"] == [], level
            # llama.cpp's own counts: 8 tokens each, decoded at a measured, positive speed
            assert level["tokens_per_s"] > 0 and level["total_tokens_per_s"] > 0 and level["ttft_s"] > 0
