"""One rpc-server serving two devices, for real: `sollol up` starts the Vulkan build's rpc-server on an SSH test
node with `rpc.device: [Vulkan0, CPU]` (Mesa's lavapipe and the node's CPU, `-d Vulkan0,CPU`); `status` shows
both devices with their memory; a sharded model is split over the two devices by their own memory (the
lavapipe device's heap, the machine's RAM), its placement names each device, and greedy decoding gives the
tokens of one unsharded llama-server.

Marked `vulkan` as well as `real`: it needs the Vulkan build (`sollol llama-cpp build --backend vulkan`) and
mesa-vulkan-drivers on this machine (the test nodes share its files).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sollol_cli.backends.rpc import parse_banner_devices
from sollol_cli.llamacpp.build import LlamaCppBinaries
from tests.harness.llama import ServerGroup
from tests.harness.models import OllamaStore
from tests.harness.sshhosts import TestHosts
from tests.real.provisioning import provisioned
from tests.real.test_run_llamacpp import PROMPT, direct_greedy
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.vulkan, pytest.mark.usefixtures("shared_state")]
PORT = 50262
NODE = "gpudev"
GREEDY = ["--temperature", "0", "--seed", "1", "--num-predict", "24"]


@pytest.fixture(scope="module")
def two_devices(
    ssh_nodes: TestHosts,
    llama_bins: LlamaCppBinaries,
    vulkan_bins: LlamaCppBinaries,
    tiny_gguf: Path,
    tmp_path_factory: pytest.TempPathFactory,
    state_dir: Path,
) -> Iterator[Path]:
    """A node of its own (a fresh home: test_vulkan_up expects to upload the Vulkan build to node1) runs the
    Vulkan build; its one rpc-server serves lavapipe's Vulkan0 and the CPU."""
    node = ssh_nodes.add_node(NODE)
    tmp = tmp_path_factory.mktemp("vulkan-devices")
    store = OllamaStore(tmp / "ollama" / "models")
    store.add_model(("registry.ollama.ai", "library", "tiny", "latest"), tiny_gguf)
    roles = {
        NODE: f"rpc: {{port: {PORT}, device: [Vulkan0, CPU], environment: {{GGML_VK_VISIBLE_DEVICES: '0'}}}}\n"
        "llama_cpp: {backend: vulkan}",
    }
    extra = f"models:\n  - {{name: tiny, mode: shard, store: {store.root}, context: 1024, keep_alive: 600}}\n"
    path = tmp / "cluster.yaml"
    path.write_text(ssh_nodes.manifest_yaml(roles, name="twodev", nodes=[node], extra=extra))
    try:
        with provisioned(path, state_dir):
            yield path
    finally:
        ssh_nodes.stop_node(node)


def rpc_row(manifest: Path) -> dict[str, Any]:
    result = invoke("status", "--json", "-f", str(manifest))
    (row,) = [r for r in json.loads(result.stdout)["backends"] if r["kind"] == "rpc"]
    return row  # type: ignore[no-any-return]


def test_status_shows_both_devices_with_their_memory(two_devices: Path) -> None:
    row = rpc_row(two_devices)
    endpoint = row["address"]
    devices = row["rpc_devices"]
    assert [(d["index"], d["label"], d["name"], d["kind"]) for d in devices] == [
        (0, f"{endpoint}#0", "Vulkan0", "gpu"),
        (1, f"{endpoint}#1", "CPU", "cpu"),
    ], devices
    # the protocol's memory per device is what rpc-server's banner says of the device of that name (the banner
    # in whole MiB, rounded down)
    banner = {d.name: d for d in parse_banner_devices(invoke("logs", NODE, "rpc", "-f", str(two_devices)).stdout)}
    assert list(banner) == ["Vulkan0", "CPU"], banner
    assert [d["total_bytes"] >> 20 << 20 for d in devices] == [banner["Vulkan0"].total, banner["CPU"].total]
    assert banner["Vulkan0"].description.startswith("llvmpipe")
    assert row["total_bytes"] == sum(d["total_bytes"] for d in devices)
    table = invoke("status", "-f", str(two_devices)).stdout
    lines = [line.strip() for line in table.splitlines()]
    assert any(line.startswith(f"{NODE} ") and " Vulkan0 " in line for line in lines), table
    assert any(line.startswith("CPU ") and "GiB" in line for line in lines), table


def test_sharded_model_places_layers_on_both_devices_with_the_unsharded_tokens(
    two_devices: Path, llama_servers: ServerGroup, tiny_gguf: Path
) -> None:
    single = llama_servers.llama_server(tiny_gguf, context=1024)
    expected = direct_greedy(single, PROMPT, 24)
    result = invoke("run", "tiny", PROMPT, *GREEDY, "-v", "-f", str(two_devices))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected + "\n"
    # while the coordinator holds the rpc-server nothing probes it: status shows both devices as they were
    held = rpc_row(two_devices)
    assert held["reachable"] == "busy", held
    assert [(d["name"], d["kind"]) for d in held["rpc_devices"]] == [("Vulkan0", "gpu"), ("CPU", "cpu")], held
    endpoint = held["address"]
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert any("1 rpc backend with 2 devices has" in line for line in lines), result.stderr
    placement = [line for line in lines if line.startswith("placement ") and "coordinator" not in line]
    # the lavapipe device (2 GiB) gets a share by its own memory, the CPU device by the machine's RAM: both get
    # layers, the first ones on Vulkan0 (llama-server orders an rpc-server's devices by their index)
    assert [line.split(":")[0:2] for line in placement] == [
        [f"placement {endpoint.split(':')[0]}", f"{PORT}#0"],
        [f"placement {endpoint.split(':')[0]}", f"{PORT}#1"],
    ], placement
    for line in placement:
        assert "layers -" not in line and ", model 0.0 MiB" not in line, placement
    assert placement[0].startswith(f"placement {endpoint}#0: layers 0-"), placement
