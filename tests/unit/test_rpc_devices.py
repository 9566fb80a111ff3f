"""Several devices per rpc-server, as tables: which devices a server serves and what memory each draws on, what a
node serving a whole model can hold it in, the choice and split of a coordinator over them, and where the log
says their layers went."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from sollol_cli.backends.rpc import RpcDevice, RpcProbe
from sollol_cli.errors import UsageError
from sollol_cli.manifest.models import Model
from sollol_cli.placement import RpcMemory
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.coordinator import CoordinatorRecord
from sollol_cli.sharding.decision import serving_free_bytes
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.lifecycle import Placed, parse_placement_lines, placement_lines, placement_of
from sollol_cli.sharding.placement_log import parse_placement
from sollol_cli.sharding.planning import RpcChoice, choose_rpc_servers
from sollol_cli.sharding.pool import RpcServer
from sollol_cli.state import Accelerator, ClusterState, NodeState
from sollol_cli.ui.status import render

GIB = 2**30
RAM = 24 * GIB


def server(
    names: tuple[str, ...] = (), totals: tuple[float, ...] = (), *, port: int = 50052, machine: str = "m1"
) -> RpcServer:
    devices = tuple(RpcDevice(i, int(t * GIB), int(t * GIB)) for i, t in enumerate(totals))
    probe = RpcProbe("ready", (7, 0, 0), devices) if totals else None
    return RpcServer(f"n{port}", "10.0.0.1", port, machine, None, probe, "n1", names)


def node(build: str | None) -> NodeState:
    return NodeState(address="10.0.0.1", mem_total_bytes=RAM, llama_backend=build)


# (id, manifest names, probed device totals in GiB, node's build, expected (label, name, kind) per device)
DEVICE_CASES: list[tuple[str, tuple[str, ...], tuple[float, ...], str | None, list[tuple[str, str | None, str]]]] = [
    ("cpu-build", (), (24,), "cpu", [("10.0.0.1:50052", None, "cpu")]),
    ("build-unknown-is-cpu", (), (24,), None, [("10.0.0.1:50052", None, "cpu")]),
    ("gpu-build-default", (), (8, 8), "cuda", [("10.0.0.1:50052#0", None, "gpu"), ("10.0.0.1:50052#1", None, "gpu")]),
    # a GPU build that found no GPU serves the CPU, and ggml reports the machine's RAM for it
    ("gpu-build-fell-back-to-cpu", (), (24,), "vulkan", [("10.0.0.1:50052", None, "cpu")]),
    ("named-gpu-and-cpu", ("Vulkan0", "CPU"), (2, 24), "vulkan",
     [("10.0.0.1:50052#0", "Vulkan0", "gpu"), ("10.0.0.1:50052#1", "CPU", "cpu")]),
    ("named-before-any-probe", ("CUDA0", "CUDA1"), (), "cuda",
     [("10.0.0.1:50052#0", "CUDA0", "gpu"), ("10.0.0.1:50052#1", "CUDA1", "gpu")]),
    ("nothing-known", (), (), None, [("10.0.0.1:50052", None, "cpu")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("names", "totals", "build", "expected"), [c[1:] for c in DEVICE_CASES], ids=[c[0] for c in DEVICE_CASES]
)
def test_served_devices(
    names: tuple[str, ...], totals: tuple[float, ...], build: str | None, expected: list[tuple[str, str | None, str]]
) -> None:
    devices = server(names, totals).devices(node(build))
    assert [(d.label, d.name, d.kind) for d in devices] == expected
    unprobed = len(devices) - len(totals)  # memory unknown until a probe says
    assert [d.total for d in devices] == [int(t * GIB) for t in totals] + [None] * unprobed


def test_memory_per_device_names_its_memory() -> None:
    """A GPU device draws on its own memory (keyed by its name, else its index), a CPU device on the machine's."""
    named = server(("Vulkan0", "CPU"), (2, 24)).memory(node("vulkan"))
    assert named == [
        RpcMemory("n50052#0", "m1", 2 * GIB, None, "n50052", "Vulkan0"),
        RpcMemory("n50052#1", "m1", 24 * GIB, None, "n50052", None),
    ]
    assert [d.memory_key for d in server((), (8, 8)).memory(node("cuda"))] == [("m1", "#0"), ("m1", "#1")]
    assert server((), (24,)).memory(None) == [RpcMemory("n50052", "m1", 24 * GIB, None, "n50052", None)]


RTX = Accelerator(kind="cuda", name="RTX 3090", memory_total=24 * GIB, memory_free=20 * GIB)
RTX_2 = Accelerator(kind="cuda", name="RTX 3060", memory_total=12 * GIB, memory_free=11 * GIB)
RADV = Accelerator(kind="vulkan", name="RX 6800 (RADV)")
LAVAPIPE = Accelerator(kind="vulkan", name="llvmpipe", device_type="cpu")

# (id, backend kind, node's build, accelerators, expected free bytes)
SERVING_CASES: list[tuple[str, str, str | None, list[Accelerator], int | None]] = [
    ("cpu-llama-server-counts-ram", "llamacpp", "cpu", [RTX], 30 * GIB),
    ("cuda-llama-server-counts-vram", "llamacpp", "cuda", [RTX, RTX_2], 31 * GIB),
    ("vulkan-without-memory-figures-unknown", "llamacpp", "vulkan", [RADV], None),
    ("lavapipe-is-no-gpu", "llamacpp", "vulkan", [LAVAPIPE], 30 * GIB),
    ("ollama-on-nvidia-counts-vram", "ollama", None, [RTX], 20 * GIB),
    ("ollama-without-gpu-counts-ram", "ollama", None, [RADV, LAVAPIPE], 30 * GIB),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "build", "accelerators", "free"), [c[1:] for c in SERVING_CASES], ids=[c[0] for c in SERVING_CASES]
)
def test_serving_free_bytes(kind: str, build: str | None, accelerators: list[Accelerator], free: int | None) -> None:
    state = NodeState(address="10.0.0.1", mem_available_bytes=30 * GIB, llama_backend=build, accelerators=accelerators)
    assert serving_free_bytes(kind, state) == free


def test_choice_gives_each_device_a_share() -> None:
    """One rpc-server serving a 2 GiB GPU and the CPU, beside a CPU rpc-server on the same machine: the GPU's share
    follows its VRAM, the two CPU devices split the machine's RAM; -ts has three shares, in device order."""
    state = ClusterState(cluster="c", nodes={"n1": node("vulkan")})
    servers = [server(("Vulkan0", "CPU"), (2, 24)), server((), (24,), port=50053)]
    choice = choose_rpc_servers(Model(name="big"), ModelFile("/m.gguf", GIB, None), servers, "7.0.0", state)
    assert choice == RpcChoice(
        ("10.0.0.1:50052", "10.0.0.1:50053"),
        (round(2 / 26, 4), round(12 / 26, 4), round(12 / 26, 4)),
        {"10.0.0.1:50052": [2 * GIB, 2 * GIB, 24 * GIB, 24 * GIB], "10.0.0.1:50053": [24 * GIB, 24 * GIB]},
        ("10.0.0.1:50052#0", "10.0.0.1:50052#1", "10.0.0.1:50053"),
    )
    # the manifest's tensor_split has one share per device
    file = ModelFile("/m.gguf", GIB, None)
    assert choose_rpc_servers(Model(name="big", tensor_split=[2, 1, 1]), file, servers, "7.0.0", state).split == (
        0.5, 0.25, 0.25,
    )  # fmt: skip
    # one per rpc backend is not enough once one serves two devices (the manifest check cannot know that when a
    # node leaves its devices to rpc-server's default)
    with pytest.raises(UsageError) as raised:
        choose_rpc_servers(Model(name="big", tensor_split=[1, 1]), file, servers, "7.0.0", state)
    assert raised.value.message == (
        "tensor_split has 2 shares but the model is sharded over 3 devices of 2 rpc backends; give one share per device"
    )


# what llama-server 0c1e57098 logs for `--rpc A,B` where A serves Vulkan0 and CPU: buffers are named by the
# device's index on its own rpc-server, layers by the index over every device
LOG = """\
load_tensors: layer   0 assigned to device RPC0, is_swa = 0
load_tensors: layer   4 assigned to device RPC2, is_swa = 0
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors: RPC0[10.0.0.1:50052] model buffer size =     2.50 MiB
load_tensors: RPC1[10.0.0.1:50052] model buffer size =    10.00 MiB
load_tensors: RPC0[10.0.0.1:50053] model buffer size =    12.50 MiB
load_tensors:   CPU_Mapped model buffer size =     4.02 MiB
llama_kv_cache: RPC0[10.0.0.1:50052] KV buffer size =     0.50 MiB
llama_kv_cache: RPC1[10.0.0.1:50052] KV buffer size =     2.00 MiB
llama_kv_cache: RPC0[10.0.0.1:50053] KV buffer size =     2.00 MiB
"""


def test_log_buffers_keyed_per_device() -> None:
    placed = parse_placement(LOG)
    assert {k: (v.model_mib, v.kv_mib) for k, v in placed.items()} == {
        "10.0.0.1:50052#0": (2.5, 0.5),
        "10.0.0.1:50052#1": (10.0, 2.0),
        "10.0.0.1:50053#0": (12.5, 2.0),
        "CPU_Mapped": (4.02, 0.0),
    }


def test_placement_per_device_of_a_record() -> None:
    rpc = ["10.0.0.1:50052", "10.0.0.1:50053"]
    devices = ["10.0.0.1:50052#0", "10.0.0.1:50052#1", "10.0.0.1:50053"]
    record = CoordinatorRecord(
        "big", "d", 1, 1, "127.0.0.1", 1, "", rpc, 0.0, 0.0, 60.0, n_layer=7, split=[0.125, 0.375, 0.5],
        devices=devices,
    )  # fmt: skip
    parts = placement_of(record, LOG)
    assert parts == [
        Placed("10.0.0.1:50052#0", 0, 0, 2.5, 0.5),
        Placed("10.0.0.1:50052#1", 1, 3, 10.0, 2.0),
        Placed("10.0.0.1:50053", 4, 7, 12.5, 2.0),
        Placed(None, None, None, 4.0),
    ]
    lines = placement_lines(record, LOG)
    assert lines[:2] == [
        "placement 10.0.0.1:50052#0: layers 0-0, model 2.5 MiB, KV 0.5 MiB",
        "placement 10.0.0.1:50052#1: layers 1-3, model 10.0 MiB, KV 2.0 MiB",
    ]
    assert parse_placement_lines(lines) == parts  # what the dashboard reads back


def status_row(devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "n1", "node": "n1", "kind": "rpc", "address": "10.0.0.1:50052", "managed": True, "reachable": "yes",
        "version": "rpc 7.0.0", "models": [], "loaded": [], "slots": None, "in_flight": None, "error": None,
        "free_bytes": sum(d["free_bytes"] for d in devices), "total_bytes": sum(d["total_bytes"] for d in devices),
        "rpc_devices": devices, "accelerators": [], "vulkan_loader": None, "llama_backend": None, "llama_build": None,
    }  # fmt: skip


def test_status_table_shows_each_device_of_an_rpc_server() -> None:
    devices = [
        {"index": 0, "label": "10.0.0.1:50052#0", "name": "Vulkan0", "kind": "gpu",
         "free_bytes": GIB, "total_bytes": 2 * GIB},
        {"index": 1, "label": "10.0.0.1:50052#1", "name": None, "kind": "cpu",
         "free_bytes": 20 * GIB, "total_bytes": RAM},
    ]  # fmt: skip
    console = Console(file=io.StringIO(), width=120, highlight=False, color_system=None)
    console.print(render({"cluster": "c", "backends": [status_row(devices)], "reachable": 1, "total": 1}))
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert lines[2:] == [
        "n1       rpc   10.0.0.1:50052  up     rpc 7.0.0  -                 Vulkan0 1.0/2.0 GiB   -",
        "                                                                   #1 cpu 20.0/24.0 GiB",
    ]


def test_a_held_rpc_server_keeps_each_devices_memory(tmp_path: Path) -> None:
    """While a coordinator holds an rpc-server nothing probes it: what it had per device at the start is what
    `status` shows, a pair per device (a record from before several devices has one pair)."""
    memory = {"10.0.0.1:50052": [GIB, 2 * GIB, 20 * GIB, RAM], "10.0.0.1:50053": [GIB, 2 * GIB]}
    record = CoordinatorRecord(
        "big", "d", 1, 1, "10.0.0.9", 1, "", list(memory), 0.0, 0.0, 60.0, rpc_memory=memory, node="gpu1"
    )  # fmt: skip
    coord.save_record(tmp_path, record)
    held = coord.attached_endpoints(tmp_path)
    assert {endpoint: a.devices for endpoint, a in held.items()} == {
        "10.0.0.1:50052": ((GIB, 2 * GIB), (20 * GIB, RAM)),
        "10.0.0.1:50053": ((GIB, 2 * GIB),),
    }
