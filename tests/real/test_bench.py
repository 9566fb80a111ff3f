"""`sollol bench` on a real llama-server node and on a model sharded over two real rpc-servers: each row comes
from real generations (tokens counted by llama.cpp), the sharded one through its coordinator, and a model the
manifest shards although a node serves it whole is compared with that node."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sollol_cli.runtime.bench_results import NO_SINGLE_NODE
from sollol_cli.settings import Settings
from sollol_cli.sharding.lifecycle import stop_all
from tests.harness.llama import ServerGroup, rpc_backend_rows
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real


def test_bench_a_llama_server_and_a_sharded_model(llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path) -> None:
    node = llama_servers.llama_server(tiny_gguf, context=1024)
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    rpc_rows = rpc_backend_rows(rpcs)
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
    # what the gateway adds to a one-token request, against the real llama-server and the coordinator
    gateway = json.loads(result.stdout)["gateway"]
    assert [(g["model"], g["requests"], g["errors"]) for g in gateway] == [(model, 20, []), ("big", 20, [])]
    for added in gateway:
        assert added["direct_ms"] > 0 and added["gateway_ms"] > 0 and added["added_ms"] is not None
    # only n1 has `big`'s file under another name, so no single node serves `big` whole
    [comparison] = json.loads(result.stdout)["sharding"]
    assert comparison == {
        "model": "big",
        "sharded_tokens_per_s": rows[1]["single"]["tokens_per_s"],
        "single_backend": None,
        "single_tokens_per_s": None,
        "note": NO_SINGLE_NODE,
        "ratio": None,
    }


def test_a_model_sharded_although_a_node_has_it_is_compared_with_that_node(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    node = llama_servers.llama_server(tiny_gguf, context=1024)
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    rpc_rows = rpc_backend_rows(rpcs)
    model = tiny_gguf.stem  # the name n1 serves it by
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: benchcompare\n"
        f"llama_cpp: {{bin_dir: {llama_servers.bins.llama_server.parent}}}\n"
        "nodes:\n"
        f"  - {{name: n1, address: 127.0.0.1, transport: local, llamacpp: {{port: {node.port}, model: {tiny_gguf}}}}}\n"
        f"backends:\n{rpc_rows}"
        f"models:\n  - {{name: {model}, mode: shard, gguf: {tiny_gguf}, context: 1024}}\n"
    )
    try:
        result = invoke("bench", model, "-c", "1", "-n", "2", "-t", "8", "--json", "-f", str(path))
        table = invoke("bench", model, "-c", "1", "-n", "1", "-t", "4", "-f", str(path))
    finally:
        stop_all(Settings(), "benchcompare")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    rows = data["rows"]
    assert [(r["backend"], r["mode"]) for r in rows] == [(f"coordinator:{model}", "shard"), ("n1", "distribute")]
    sharded, single = (r["single"]["tokens_per_s"] for r in rows)
    [comparison] = data["sharding"]
    assert comparison == {
        "model": model,
        "sharded_tokens_per_s": sharded,
        "single_backend": "n1",
        "single_tokens_per_s": single,
        "note": "",
        "ratio": pytest.approx(sharded / single),
    }
    assert table.exit_code == 0, table.stderr
    *_, last, gateway = table.stdout.splitlines()
    ms = r"\d+\.\d\d ms"
    assert re.fullmatch(
        rf"{re.escape(model)} through sollol serve: [+-]{ms} \({ms} against {ms} direct, median of 20\)", gateway
    )
    assert re.fullmatch(
        rf"{re.escape(model)} sharded: \d+\.\d tokens/s, \d+\.\d\dx n1 alone \(\d+\.\d tokens/s\)", last
    ), last
