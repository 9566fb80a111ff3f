"""Proof that the harness is real: rpc-servers on two SSH test nodes, a llama-server with --rpc to both,
32 greedy tokens identical to a single-process run, and both backends holding layers (from its log)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.llama import ServerGroup, ServerProcess, hello
from tests.harness.sshhosts import TestHosts

pytestmark = pytest.mark.real
PORT = 50352


def greedy(server: ServerProcess, n: int = 32) -> list[int]:
    body = {"prompt": "The cluster", "n_predict": n, "temperature": 0, "top_k": 1, "seed": 7, "return_tokens": True}
    request = urllib.request.Request(
        server.url + "/completion", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        tokens: list[int] = json.load(response)["tokens"]
    return tokens


def test_sharded_over_two_ssh_nodes_equals_single_process(
    ssh_nodes: TestHosts,
    llama_servers: ServerGroup,
    llama_bins,
    tiny_gguf: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    n1, n2 = ssh_nodes.nodes[:2]
    spawned = []
    for node in (n1, n2):
        shutil.copyfile(llama_bins.rpc_server, node.root_dir / "proof-rpc-server")
        (node.root_dir / "proof-rpc-server").chmod(0o755)
        spawned.append(
            ssh_nodes.spawn_in(
                node, f"exec /root/proof-rpc-server -H {node.address} -p {PORT}", log=tmp_path / f"{node.name}.log"
            )
        )
    deadline = time.monotonic() + 15
    while not all(hello(node.address, PORT) for node in (n1, n2)):
        assert time.monotonic() < deadline, "rpc-servers on the nodes did not answer HELLO"
        time.sleep(0.05)
    try:
        single = llama_servers.llama_server(tiny_gguf)
        expected = greedy(single)
        single.stop()
        sharded = llama_servers.llama_server(
            tiny_gguf, rpc=[f"{n1.address}:{PORT}", f"{n2.address}:{PORT}"], extra=["-lv", "4"]
        )
        assert greedy(sharded) == expected
        assert len(expected) == 32 and len(set(expected)) > 8  # varied tokens, not one repeated
        log = sharded.log.read_text()
        for node in (n1, n2):
            marker = f"[{node.address}:{PORT}] model buffer size"
            line = next(text for text in log.splitlines() if marker in text and "0.00 MiB" not in text)
            assert float(line.rsplit("=", 1)[1].split()[0]) > 1.0, line
    finally:
        for node in (n1, n2):
            ssh_nodes.exec_in(node, "pkill -f '[p]roof-rpc-server'; true", check=False)
