"""`sollol up` acting on `llama_cpp.backend` for real: the Vulkan build on one SSH test node (its rpc-server on
Mesa's lavapipe, told by the rpc role's environment to use that CPU-type Vulkan device), the static CPU build
on another; `status` says which node runs which, and a sharded model runs over both rpc-servers.

Marked `vulkan` as well as `real`: it needs the Vulkan build (`sollol llama-cpp build --backend vulkan`,
~13 min on 2 cores the first time) and mesa-vulkan-drivers on this machine (the test nodes share its files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.backends.rpc import parse_banner_devices
from sollol_cli.llamacpp.build import LlamaCppBinaries
from sollol_cli.llamacpp.sdist import LLAMA_CPP_PYTHON_VERSION
from tests.harness.models import OllamaStore
from tests.harness.sshhosts import TestHosts, TestNode
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.vulkan, pytest.mark.usefixtures("shared_state")]
PORT = 50252
VERSION = LLAMA_CPP_PYTHON_VERSION


@pytest.fixture(scope="module")
def mixed(
    ssh_nodes: TestHosts,
    llama_bins: LlamaCppBinaries,
    vulkan_bins: LlamaCppBinaries,
    tiny_gguf: Path,
    tmp_path_factory: pytest.TempPathFactory,
    state_dir: Path,
) -> Iterator[Path]:
    """node1: vulkan, node2: cpu; sollol's own cached builds (no bin_dir: that would serve every backend)."""
    tmp = tmp_path_factory.mktemp("vulkan-up")
    store = OllamaStore(tmp / "ollama" / "models")
    store.add_model(("registry.ollama.ai", "library", "tiny", "latest"), tiny_gguf)
    roles = {
        "node1": f"rpc: {{port: {PORT}, environment: {{GGML_VK_VISIBLE_DEVICES: '0'}}}}\n"
        "llama_cpp: {backend: vulkan}",
        "node2": f"rpc: {{port: {PORT}}}\nllama_cpp: {{backend: cpu}}",
    }
    # split_by: memory: the placement asserted is the memory rule's (see test_sharding.py)
    extra = (
        f"models:\n  - {{name: tiny, mode: shard, store: {store.root}, context: 512, keep_alive: 600, "
        "split_by: memory}\n"
    )
    path = tmp / "cluster.yaml"
    path.write_text(ssh_nodes.manifest_yaml(roles, name="gpumix", nodes=ssh_nodes.nodes[:2], extra=extra))
    os.environ["SOLLOL_STATE_DIR"] = str(state_dir)  # module-scoped: set up before shared_state sets it per test
    try:
        yield path
    finally:
        invoke("down", str(path), "-q")
        os.environ.pop("SOLLOL_STATE_DIR", None)


@pytest.fixture(scope="module")
def up_data(mixed: Path) -> dict:  # type: ignore[type-arg]
    result = invoke("up", str(mixed), "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def rpc_pid(data: dict, node: str) -> int:  # type: ignore[type-arg]
    (service,) = [s for n in data["nodes"] if n["node"] == node for s in n["services"] if s["kind"] == "rpc"]
    return int(service["pid"])


def proc(hosts: TestHosts, node: TestNode, pid: int, what: str) -> str:
    return hosts.exec_in(node, f"cat /proc/{pid}/{what} | tr '\\0' '\\n'").stdout


def test_up_puts_the_vulkan_build_on_one_node_and_the_cpu_build_on_the_other(
    up_data: dict,  # type: ignore[type-arg]
    ssh_nodes: TestHosts,
) -> None:
    plans = {n["node"]: n["plan"] for n in up_data["nodes"]}
    assert plans["node1"][0] == f"llama.cpp vulkan (vulkan {VERSION}): vulkan (set in the manifest)"
    assert plans["node2"][0] == f"llama.cpp cpu (cpu {VERSION}): cpu (set in the manifest)"
    assert any(step.startswith("upload rpc-server -> $HOME/.sollol/bin/vulkan/rpc-server") for step in plans["node1"])
    node1, node2 = ssh_nodes.nodes[:2]
    vulkan, cpu = rpc_pid(up_data, "node1"), rpc_pid(up_data, "node2")
    exe1 = ssh_nodes.exec_in(node1, f"readlink /proc/{vulkan}/exe").stdout.strip()
    exe2 = ssh_nodes.exec_in(node2, f"readlink /proc/{cpu}/exe").stdout.strip()
    assert exe1.endswith("/.sollol/bin/vulkan/rpc-server") and exe2.endswith("/.sollol/bin/rpc-server"), (exe1, exe2)
    # the Vulkan rpc-server runs with the manifest's environment and has lavapipe (Mesa's llvmpipe driver)
    # loaded; the CPU one has no Vulkan at all
    assert "GGML_VK_VISIBLE_DEVICES=0" in proc(ssh_nodes, node1, vulkan, "environ").splitlines()
    assert "libvulkan_lvp.so" in proc(ssh_nodes, node1, vulkan, "maps")
    assert "GGML_VK_VISIBLE_DEVICES" not in proc(ssh_nodes, node2, cpu, "environ")
    assert "libvulkan" not in proc(ssh_nodes, node2, cpu, "maps")


def test_status_shows_each_nodes_build_and_the_vulkan_device(
    up_data: dict,  # type: ignore[type-arg]
    mixed: Path,
) -> None:
    result = invoke("status", "--json", "-f", str(mixed))
    rows = {r["node"]: r for r in json.loads(result.stdout)["backends"]}
    assert (rows["node1"]["llama_backend"], rows["node1"]["llama_build"]) == ("vulkan", f"vulkan {VERSION}")
    assert (rows["node2"]["llama_backend"], rows["node2"]["llama_build"]) == ("cpu", f"cpu {VERSION}")
    # each rpc-server serves one device (the protocol's DEVICE_COUNT): lavapipe's heap on node1, the
    # machine's memory on node2 (the nodes share this machine's RAM)
    vulkan, cpu = rows["node1"]["rpc_devices"], rows["node2"]["rpc_devices"]
    assert len(vulkan) == len(cpu) == 1, (vulkan, cpu)
    assert vulkan[0]["total_bytes"] != cpu[0]["total_bytes"]
    # the banners name the devices (flushed by the time `up`'s readiness probe has connected): llvmpipe, CPU
    banners = {node: invoke("logs", node, "rpc", "-f", str(mixed)).stdout for node in ("node1", "node2")}
    devices = {node: [(d.name, d.description.split(" (")[0]) for d in parse_banner_devices(text)]
               for node, text in banners.items()}  # fmt: skip
    assert devices["node1"] == [("Vulkan0", "llvmpipe")], banners["node1"]
    assert [name for name, _ in devices["node2"]] == ["CPU"], banners["node2"]
    assert vulkan[0]["total_bytes"] == parse_banner_devices(banners["node1"])[0].total
    table = invoke("status", "-f", str(mixed)).stdout
    assert f"vulkan {VERSION}" in table and f"cpu {VERSION}" in table, table


def test_a_sharded_model_runs_over_the_vulkan_and_the_cpu_rpc_server(
    up_data: dict,  # type: ignore[type-arg]
    mixed: Path,
    ssh_nodes: TestHosts,
) -> None:
    result = invoke("run", "tiny", "Hello", "--temperature", "0", "--num-predict", "4", "-v", "-f", str(mixed))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip(), result.stderr
    n1, n2 = (node.address for node in ssh_nodes.nodes[:2])
    placement = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("placement ")]
    assert [line.split(":")[0] for line in placement][:2] == [f"placement {n1}", f"placement {n2}"], result.stderr
    assert all("layers" in line for line in placement[:2]), placement


@pytest.fixture
def node_without_loader(ssh_nodes: TestHosts) -> Iterator[TestNode]:
    """node3 with no usable Vulkan loader, in its own mount namespace only (the nodes share this machine's
    files): libvulkan.so.1 replaced by an empty file and an ld.so.cache made without it, so both the facts
    (`ldconfig -p`) and the dynamic loader see no libvulkan.so.1; undone afterwards."""
    if not ssh_nodes.isolated:
        pytest.skip("needs test nodes with their own mount namespaces")
    node = ssh_nodes.nodes[2]
    ssh_nodes.exec_in(
        node,
        "set -e; lib=$(readlink -f \"$(ldconfig -p | awk '/libvulkan\\.so\\.1 /{print $NF; exit}')\"); "
        'echo "$lib" > /root/hidden-lib; mount --bind /dev/null "$lib"; '
        "ldconfig -X -C /root/ld.so.cache; mount --bind /root/ld.so.cache /etc/ld.so.cache",
    )
    try:
        assert "libvulkan.so.1 " not in ssh_nodes.exec_in(node, "ldconfig -p").stdout
        yield node
    finally:
        ssh_nodes.exec_in(node, 'umount /etc/ld.so.cache; umount "$(cat /root/hidden-lib)"', check=False)
        ssh_nodes.exec_in(node, "rm -f /root/ld.so.cache /root/hidden-lib", check=False)


def test_a_node_without_a_vulkan_loader_fails_alone(
    ssh_nodes: TestHosts,
    node_without_loader: TestNode,
    llama_bins: LlamaCppBinaries,
    vulkan_bins: LlamaCppBinaries,
    tmp_path: Path,
) -> None:
    roles = {
        "node2": f"rpc: {{port: {PORT + 1}}}",
        "node3": f"rpc: {{port: {PORT + 1}}}\nllama_cpp: {{backend: vulkan}}",
    }
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(ssh_nodes.manifest_yaml(roles, name="noloader", nodes=ssh_nodes.nodes[1:3]))
    try:
        result = invoke("up", str(manifest), "--json")
        data = json.loads(result.stdout)
        nodes = {n["node"]: n for n in data["nodes"]}
        assert result.exit_code == 1, result.stderr
        assert (nodes["node2"]["status"], nodes["node2"]["failures"]) == ("changed", [])
        assert [s["kind"] for s in nodes["node2"]["services"] if s["ready"]] == ["rpc"]
        assert nodes["node3"]["status"] == "failed"
        assert nodes["node3"]["failures"] == [
            f"sollol-noloader-rpc-{PORT + 1}: the node has no Vulkan loader (libvulkan.so.1): install it and a "
            "Vulkan driver (Debian: libvulkan1 mesa-vulkan-drivers), or choose another backend"
        ]
        assert nodes["node3"]["services"] == []
        assert f":{PORT + 1}" not in ssh_nodes.exec_in(node_without_loader, "ss -ltnH").stdout
    finally:
        invoke("down", str(manifest), "-q")
