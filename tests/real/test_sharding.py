"""Model sharding end to end: rpc-servers on SSH test nodes started by `sollol up`, the tiny model taken from
an Ollama store, a coordinator sollol starts, reuses and replaces."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from sollol_cli.sharding.coordinator import alive, all_records
from tests.harness.llama import ServerGroup, bin_dir_of
from tests.harness.models import OllamaStore
from tests.harness.sshhosts import TestHosts
from tests.real.provisioning import provisioned
from tests.real.test_run_llamacpp import PROMPT, direct_greedy
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.usefixtures("shared_state")]
RPC_PORT = 50152
GREEDY = ["--temperature", "0", "--seed", "1", "--num-predict", "24"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> OllamaStore:
    store = OllamaStore(tmp_path_factory.mktemp("ollama") / "models")
    store.add_model(("registry.ollama.ai", "library", "tiny", "latest"), tiny_gguf)
    return store


@pytest.fixture(scope="module")
def shard_manifest(
    ssh_nodes: TestHosts,
    llama_bins,
    store: OllamaStore,
    tmp_path_factory: pytest.TempPathFactory,
    state_dir: Path,  # type: ignore[no-untyped-def]
) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("shard")
    bin_dir = bin_dir_of(llama_bins, tmp)
    roles = {"node1": f"rpc: {{port: {RPC_PORT}}}", "node2": f"rpc: {{port: {RPC_PORT}}}"}
    extra = (
        f"llama_cpp:\n  bin_dir: {bin_dir}\n"
        # split_by: memory: these tests assert the memory rule's placement; the speed rule has its own test
        # (test_speed_split.py), and namespace test nodes on one busy machine can measure 3x apart
        f"models:\n  - {{name: tiny, mode: shard, store: {store.root}, context: 1024, keep_alive: 600, "
        "split_by: memory}\n"
    )
    path = tmp / "cluster.yaml"
    path.write_text(ssh_nodes.manifest_yaml(roles, name="shard", nodes=ssh_nodes.nodes[:2], extra=extra))
    with provisioned(path, state_dir):
        yield path


def coordinators(state_dir: Path) -> list:  # type: ignore[type-arg]
    return all_records(state_dir / "clusters" / "shard")


def test_sharded_run_gives_the_single_process_greedy_tokens(
    shard_manifest: Path, llama_servers: ServerGroup, tiny_gguf: Path, ssh_nodes: TestHosts, state_dir: Path
) -> None:
    single = llama_servers.llama_server(tiny_gguf, context=1024)
    expected = direct_greedy(single, PROMPT, 24)
    result = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(shard_manifest))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected + "\n"
    lines = result.stderr.splitlines()
    assert lines[0].startswith("coordinator:tiny · shard · first token")
    assert lines[1].startswith("  decision: shard (set in the manifest)")
    assert lines[2].startswith("  started a coordinator (pid ")
    n1, n2 = (node.address for node in ssh_nodes.nodes[:2])
    assert lines[3].startswith(f"  placement {n1}:{RPC_PORT}: layers 0-4, model ")
    assert lines[4].startswith(f"  placement {n2}:{RPC_PORT}: layers 5-8, model ")
    (record,) = coordinators(state_dir)
    assert alive(record) and record.rpc == [f"{n1}:{RPC_PORT}", f"{n2}:{RPC_PORT}"]


def test_second_request_reuses_the_coordinator(shard_manifest: Path, state_dir: Path) -> None:
    first = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(shard_manifest))
    (before,) = coordinators(state_dir)
    second = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(shard_manifest))
    (after,) = coordinators(state_dir)
    assert first.exit_code == second.exit_code == 0
    assert second.stdout == first.stdout
    assert f"  reused the running coordinator (pid {before.pid}, port {before.port})" in second.stderr.splitlines()
    assert (after.pid, after.start_time) == (before.pid, before.start_time)


def test_status_shows_rpc_servers_busy_with_the_coordinator(shard_manifest: Path, ssh_nodes: TestHosts) -> None:
    invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(shard_manifest))
    result = invoke("status", "--json", "-f", str(shard_manifest))
    rows = json.loads(result.stdout)["backends"]
    assert [(r["kind"], r["reachable"]) for r in rows] == [("rpc", "busy"), ("rpc", "busy")]
    assert all(r["error"].startswith("attached to the coordinator for 'tiny'") for r in rows)
    (model,) = json.loads(result.stdout)["models"]
    assert (model["name"], model["mode"]) == ("tiny", "shard")
    assert model["reason"].startswith("shard (set in the manifest): needs ")
    n1, n2 = (node.address for node in ssh_nodes.nodes[:2])
    assert [line.split(":")[0] for line in model["placement"]][:2] == [f"placement {n1}", f"placement {n2}"]
    table = invoke("status", "-f", str(shard_manifest)).stdout.splitlines()
    assert "models:" in table and any(line.startswith("tiny: shard (set in the manifest)") for line in table)


def test_killed_rpc_server_replans_on_the_remaining_one(
    shard_manifest: Path, ssh_nodes: TestHosts, state_dir: Path
) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(shard_manifest)).exit_code == 0
    (old,) = coordinators(state_dir)
    node2 = ssh_nodes.nodes[1]
    pidfile = node2.root_dir / f".sollol/shard/node2/run/sollol-shard-rpc-{RPC_PORT}.pid"
    pid = pidfile.read_text().split()[0]
    ssh_nodes.exec_in(node2, f"kill -9 {pid}")
    result = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(shard_manifest))
    assert result.exit_code == 0, result.stderr
    n1 = ssh_nodes.nodes[0].address
    assert f"  placement {n1}:{RPC_PORT}: layers 0-8, model " in "\n".join(result.stderr.splitlines())
    # -v describes the re-planned coordinator, not the one decided on before node2's rpc-server died
    [decision] = [line for line in result.stderr.splitlines() if line.startswith("  decision: ")]
    assert decision.startswith("  decision: shard (set in the manifest): needs ") and "; 1 rpc backend has " in decision
    deadline = time.monotonic() + 5
    while alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(old), "the failed coordinator must not be left running"
    (new,) = coordinators(state_dir)
    assert new.pid != old.pid and new.rpc == [f"{n1}:{RPC_PORT}"]
    # bring node2's rpc-server back for the other tests
    assert invoke("up", str(shard_manifest), "-q").exit_code == 0


@contextlib.contextmanager
def fake_rpc_server(version: tuple[int, int, int]) -> Iterator[int]:
    """Answers HELLO like an rpc-server of another protocol version."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            header = await reader.readexactly(9)
            await reader.readexactly(struct.unpack("<BQ", header)[1])
            payload = bytes(version) + bytes(25)
            writer.write(struct.pack("<Q", len(payload)) + payload)
            await writer.drain()
            await reader.read()
        writer.close()

    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_protocol_mismatch_is_refused_before_start(
    tmp_path: Path, store: OllamaStore, llama_bins, state_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    with fake_rpc_server((6, 1, 0)) as port:
        path = tmp_path / "cluster.yaml"
        path.write_text(
            "name: mismatch\n"
            f"backends:\n  - {{name: oldnode, kind: rpc, address: 127.0.0.1, port: {port}}}\n"
            f"models:\n  - {{name: tiny, mode: shard, store: {store.root}}}\n"
        )
        result = invoke("run", "tiny", "hi", "-f", str(path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: rpc backend oldnode (127.0.0.1:{port}) speaks protocol 6.1.0, the coordinator's llama.cpp speaks "
        "7.0.0; run the same llama.cpp build on every node (sollol up uploads it)\n"
    )
    assert all_records(state_dir / "clusters" / "mismatch") == []


def test_down_stops_the_coordinator(shard_manifest: Path, state_dir: Path) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(shard_manifest)).exit_code == 0
    (record,) = coordinators(state_dir)
    assert invoke("down", str(shard_manifest), "-q").exit_code == 0
    deadline = time.monotonic() + 5
    while alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(record)
    assert coordinators(state_dir) == []
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)
    assert invoke("up", str(shard_manifest), "-q").exit_code == 0


def test_model_from_an_ollama_store_on_a_node(
    shard_manifest: Path, ssh_nodes: TestHosts, tiny_gguf: Path, tmp_path: Path, state_dir: Path
) -> None:
    """`store_node`: the GGUF is resolved in node2's Ollama store over SSH and copied to the controller."""
    node2 = ssh_nodes.nodes[1]
    remote = OllamaStore(node2.root_dir / ".ollama" / "models")  # node2's ~/.ollama/models
    weights = remote.add_model(("registry.ollama.ai", "library", "Remote-Tiny", "q4"), tiny_gguf)
    text = shard_manifest.read_text().replace(
        "models:\n", "models:\n  - {name: remote-tiny:q4, mode: shard, store_node: node2, context: 1024}\n"
    )
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(text)
    invoke("down", str(shard_manifest), "-q")  # frees the rpc-servers held by the other model's coordinator
    assert invoke("up", str(manifest), "-q").exit_code == 0
    result = invoke("run", "remote-tiny:q4", PROMPT, *GREEDY, "-v", "-f", str(manifest))
    assert result.exit_code == 0, result.stderr
    local = invoke("run", "tiny", PROMPT, *GREEDY, "-f", str(manifest))
    assert result.stdout == local.stdout
    cached = Settings().cache_dir / "models" / "blobs" / f"{weights['digest'].replace(':', '-')}.gguf"
    assert cached.stat().st_size == tiny_gguf.stat().st_size
    invoke("down", str(manifest), "-q")
    assert invoke("up", str(shard_manifest), "-q").exit_code == 0
