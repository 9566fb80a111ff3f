"""A sharded model's coordinator on a node (`models[].coordinator`): llama-server started over SSH on node3,
its layers on the rpc-servers `sollol up` started on node1 and node2, reused, replaced and stopped."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.provision.nodelock import LOCK_NAME
from sollol_cli.settings import Settings
from sollol_cli.sharding.coordinator import CoordinatorRecord, all_records
from tests.harness.llama import ServerGroup, bin_dir_of
from tests.harness.models import OllamaStore
from tests.harness.sshhosts import TestHosts, TestNode
from tests.real.provisioning import provisioned
from tests.real.test_run_llamacpp import PROMPT, direct_greedy
from tests.real.test_sharding import GREEDY
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.usefixtures("shared_state")]
RPC_PORT = 50153


@pytest.fixture(scope="module")
def coordinator_node(ssh_nodes: TestHosts) -> TestNode:
    return ssh_nodes.nodes[2]


@pytest.fixture(scope="module")
def manifest(
    ssh_nodes: TestHosts,
    coordinator_node: TestNode,
    llama_bins,  # type: ignore[no-untyped-def]
    tiny_gguf: Path,
    tmp_path_factory: pytest.TempPathFactory,
    state_dir: Path,
) -> Iterator[Path]:
    """`tiny` from node3's own Ollama store, run on node3; `tiny-here` from the controller's store, copied there."""
    tmp = tmp_path_factory.mktemp("noded")
    remote = OllamaStore(coordinator_node.root_dir / ".ollama" / "models")
    remote.add_model(("registry.ollama.ai", "library", "tiny", "latest"), tiny_gguf)
    here = OllamaStore(tmp / "ollama" / "models")
    here.add_model(("registry.ollama.ai", "library", "tiny-here", "latest"), tiny_gguf)
    bin_dir = bin_dir_of(llama_bins, tmp)
    roles = {"node1": f"rpc: {{port: {RPC_PORT}}}", "node2": f"rpc: {{port: {RPC_PORT}}}"}
    extra = (
        f"llama_cpp:\n  bin_dir: {bin_dir}\n"
        "models:\n"
        # split_by: memory: these tests assert the memory rule's placement (see test_sharding.py)
        "  - {name: tiny, mode: shard, store_node: node3, coordinator: node3, context: 1024, keep_alive: 600, "
        "split_by: memory}\n"
        f"  - {{name: tiny-here, mode: shard, store: {here.root}, coordinator: node3, context: 1024, "
        "split_by: memory}\n"
    )
    path = tmp / "cluster.yaml"
    path.write_text(ssh_nodes.manifest_yaml(roles, name="noded", nodes=ssh_nodes.nodes[:3], extra=extra))
    with provisioned(path, state_dir):
        yield path


def records(state_dir: Path) -> list[CoordinatorRecord]:
    return all_records(state_dir / "clusters" / "noded")


def llama_servers_on(hosts: TestHosts, node: TestNode) -> list[str]:
    """pids of llama-server processes running in the node."""
    found = hosts.exec_in(node, "pgrep -f '[l]lama-server' || true").stdout.split()
    return sorted(found)


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_coordinator_on_a_node_gives_the_single_process_greedy_tokens(
    manifest: Path,
    llama_servers: ServerGroup,
    tiny_gguf: Path,
    ssh_nodes: TestHosts,
    coordinator_node: TestNode,
    state_dir: Path,
) -> None:
    expected = direct_greedy(llama_servers.llama_server(tiny_gguf, context=1024), PROMPT, 24)
    result = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(manifest))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected + "\n"
    (record,) = records(state_dir)
    lines = result.stderr.splitlines()
    assert (
        lines[2] == f"  started a coordinator on node node3 (pid {record.pid}), loaded in {record.ready_after_s:.1f} s"
    )
    n1, n2 = (node.address for node in ssh_nodes.nodes[:2])
    assert lines[3].startswith(f"  placement {n1}:{RPC_PORT}: layers 0-4, model ")
    assert lines[4].startswith(f"  placement {n2}:{RPC_PORT}: layers 5-8, model ")
    assert lines[5].startswith("  placement coordinator (node node3): token embeddings, model ")
    assert (record.node, record.host) == ("node3", coordinator_node.address)
    assert llama_servers_on(ssh_nodes, coordinator_node) == [str(record.pid)]
    # the GGUF was used in node3's own store: nothing copied to the node's model directory
    assert not (coordinator_node.root_dir / ".sollol" / "models").exists()


def test_coordinator_on_a_node_requires_its_key(manifest: Path, state_dir: Path) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    (record,) = records(state_dir)
    base = f"http://{record.host}:{record.port}"
    with urllib.request.urlopen(base + "/health", timeout=10) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/v1/models", timeout=10)
    assert refused.value.code == 401
    keyed = urllib.request.Request(base + "/v1/models", headers={"Authorization": f"Bearer {record.api_key}"})
    with urllib.request.urlopen(keyed, timeout=10) as response:
        assert json.load(response)["data"][0]["id"] == "tiny"
    assert (state_dir / "clusters" / "noded" / "coordinators" / "tiny.json").stat().st_mode & 0o077 == 0


def test_second_request_and_up_keep_the_coordinator(
    manifest: Path, ssh_nodes: TestHosts, coordinator_node: TestNode, state_dir: Path
) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    (before,) = records(state_dir)
    up = invoke("up", str(manifest), "--json")
    assert up.exit_code == 0, up.stdout
    node3 = next(n for n in json.loads(up.stdout)["nodes"] if n["node"] == "node3")
    assert (node3["status"], node3["plan"]) == ("unchanged", [])
    again = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(manifest))
    assert again.exit_code == 0, again.stderr
    reused = f"  reused the running coordinator on node node3 (pid {before.pid}, port {before.port})"
    assert reused in again.stderr.splitlines()
    assert llama_servers_on(ssh_nodes, coordinator_node) == [str(before.pid)]
    status = json.loads(invoke("status", "--json", "-f", str(manifest)).stdout)
    tiny = next(m for m in status["models"] if m["name"] == "tiny")
    assert tiny["coordinator"] == {"pid": before.pid, "host": before.host, "port": before.port, "node": "node3"}
    table = invoke("status", "-f", str(manifest)).stdout.splitlines()
    assert f"  coordinator on node node3, {before.host}:{before.port} (pid {before.pid})" in table


def test_logs_of_the_coordinator_on_its_node(manifest: Path, state_dir: Path) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    (record,) = records(state_dir)
    result = invoke("logs", "node3", "coordinator:tiny", "--lines", "2000", "-f", str(manifest))
    assert result.exit_code == 0, result.stderr
    assert f"starting coordinator for tiny on port {record.port}" in result.stdout
    assert "model loaded" in result.stdout and record.api_key not in result.stdout
    several = invoke("logs", "node3", "coordinator", "-f", str(manifest))
    assert (several.exit_code, several.stderr) == (
        2,
        "error: node 'node3' coordinates tiny, tiny-here; name one: sollol logs node3 coordinator:MODEL\n",
    )
    none = invoke("logs", "node1", "coordinator", "-f", str(manifest))
    assert none.stderr == "error: no model runs its coordinator on node 'node1'; see models[].coordinator\n"


def test_a_controller_gguf_is_copied_to_the_node_once(
    manifest: Path, ssh_nodes: TestHosts, coordinator_node: TestNode, tiny_gguf: Path, state_dir: Path
) -> None:
    first = invoke("run", "tiny-here", PROMPT, *GREEDY, "-v", "-f", str(manifest))
    assert first.exit_code == 0, first.stderr
    # both models use the same rpc-servers, so `tiny` was unloaded first (its llama-server on node3 stopped)
    assert "  unloaded 'tiny' to free the rpc-servers (they serve one model at a time)" in first.stderr.splitlines()
    (record,) = records(state_dir)
    assert record.model == "tiny-here"
    assert wait_for(lambda: llama_servers_on(ssh_nodes, coordinator_node) == [str(record.pid)])
    (copy,) = (coordinator_node.root_dir / ".sollol" / "models").glob("sha256-*.gguf")
    assert copy.read_bytes() == tiny_gguf.read_bytes()
    copied_at = copy.stat().st_mtime_ns
    # switch back and forth: the second start of tiny-here finds its copy in place
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    again = invoke("run", "tiny-here", PROMPT, *GREEDY, "-f", str(manifest))
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout
    assert copy.stat().st_mtime_ns == copied_at


def test_killed_rpc_server_replans_without_orphans(
    manifest: Path, ssh_nodes: TestHosts, coordinator_node: TestNode, state_dir: Path
) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    (old,) = records(state_dir)
    node2 = ssh_nodes.nodes[1]
    pidfile = node2.root_dir / f".sollol/noded/node2/run/sollol-noded-rpc-{RPC_PORT}.pid"
    ssh_nodes.exec_in(node2, f"kill -9 {pidfile.read_text().split()[0]}")
    result = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(manifest))
    assert result.exit_code == 0, result.stderr
    n1 = ssh_nodes.nodes[0].address
    assert f"  placement {n1}:{RPC_PORT}: layers 0-8, model " in result.stderr
    (new,) = records(state_dir)
    assert new.pid != old.pid and new.rpc == [f"{n1}:{RPC_PORT}"]
    assert wait_for(lambda: llama_servers_on(ssh_nodes, coordinator_node) == [str(new.pid)])
    assert invoke("up", str(manifest), "-q").exit_code == 0  # node2's rpc-server back for the other tests


def test_a_coordinator_that_died_on_its_node_is_noticed(
    manifest: Path, ssh_nodes: TestHosts, coordinator_node: TestNode, state_dir: Path
) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    (old,) = records(state_dir)
    ssh_nodes.exec_in(coordinator_node, f"kill -9 {old.pid}")
    assert wait_for(lambda: llama_servers_on(ssh_nodes, coordinator_node) == [])
    status = json.loads(invoke("status", "--json", "-f", str(manifest)).stdout)
    assert next(m for m in status["models"] if m["name"] == "tiny")["coordinator"] is None
    again = invoke("run", "tiny", "hi", "--num-predict", "2", "-v", "-f", str(manifest))
    assert again.exit_code == 0, again.stderr
    assert any(line.startswith("  the previous coordinator had exited: ") for line in again.stderr.splitlines())
    (new,) = records(state_dir)
    assert new.pid != old.pid
    assert llama_servers_on(ssh_nodes, coordinator_node) == [str(new.pid)]


def test_gateway_serves_it_and_stops_it_on_exit(
    manifest: Path, ssh_nodes: TestHosts, coordinator_node: TestNode, state_dir: Path
) -> None:
    import asyncio

    import ollama

    from sollol_cli.backends.http import close_session
    from sollol_cli.gateway.server import Listening, ServeOptions, serve
    from sollol_cli.manifest.loader import load_manifest

    invoke("down", str(manifest), "-q")  # no coordinator left from earlier tests: serve stops what it starts
    assert invoke("up", str(manifest), "-q").exit_code == 0
    settings = Settings(state_dir=state_dir)
    cluster = load_manifest(manifest).cluster

    async def serve_one_chat() -> CoordinatorRecord:
        stop = asyncio.Event()
        listening: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
        options = ServeOptions("127.0.0.1", 0, grace_s=5)
        task = asyncio.create_task(serve(cluster, settings, options, stop, on_listening=listening.set_result))
        try:
            client = ollama.AsyncClient(host=(await asyncio.wait_for(listening, 60)).url, timeout=300)
            messages = [{"role": "user", "content": PROMPT}]
            reply = await client.chat(model="tiny", messages=messages, options={"seed": 1, "num_predict": 8})
            assert reply.message.content and reply.done_reason in ("stop", "length")
            (record,) = records(state_dir)
            assert [m.model for m in (await client.ps()).models] == ["tiny:latest"]
            return record
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
            await close_session()

    record = asyncio.run(serve_one_chat())
    assert record.node == "node3"
    assert records(state_dir) == []
    assert wait_for(lambda: llama_servers_on(ssh_nodes, coordinator_node) == [])


def test_down_stops_the_coordinator_on_the_node(
    manifest: Path, ssh_nodes: TestHosts, coordinator_node: TestNode, state_dir: Path
) -> None:
    assert invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(manifest)).exit_code == 0
    assert len(llama_servers_on(ssh_nodes, coordinator_node)) == 1
    down = invoke("down", str(manifest), "--json")
    assert down.exit_code == 0, down.stdout
    node3 = next(n for n in json.loads(down.stdout)["nodes"] if n["node"] == "node3")
    assert [line.split(" (pid")[0] for line in node3["changes"]] == ["stop sollol-noded-coordinator-tiny"]
    assert llama_servers_on(ssh_nodes, coordinator_node) == []
    assert records(state_dir) == []
    # no pidfile or record left; the lock file `down` held stays (deleting a flock file races its next taker)
    assert [p.name for p in (coordinator_node.root_dir / ".sollol/noded/node3/run").glob("*")] == [LOCK_NAME]
    assert invoke("up", str(manifest), "-q").exit_code == 0
