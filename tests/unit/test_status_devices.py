"""The `node devices` column of `sollol status`, rendered from fixed data (no machine memory in it): shown
once a node has a GPU, one line per device, memory as free/total where the tool reports it."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from sollol_cli.state import Accelerator
from sollol_cli.ui.status import render

GIB = 2**30
RTX = Accelerator(kind="cuda", name="RTX 3090", memory_total=24 * GIB, memory_free=20 * GIB, driver="550.54")
RX = Accelerator(kind="rocm", name="Radeon RX 6800", memory_total=16 * GIB, driver="amdgpu")
RADV = Accelerator(kind="vulkan", name="AMD Radeon RX 6800 (RADV NAVI21)", driver="radv")
LAVAPIPE = Accelerator(kind="vulkan", name="llvmpipe", driver="llvmpipe", device_type="cpu")


def row(
    name: str, accelerators: list[Accelerator], backend: str | None = None, build: str | None = None
) -> dict[str, Any]:
    return {
        "llama_backend": backend, "llama_build": build,
        "name": name, "node": name, "kind": "rpc", "address": f"10.0.0.{len(name)}:50052", "managed": True,
        "reachable": "yes", "version": "rpc 7.0.0", "models": [], "loaded": [], "slots": None, "in_flight": None,
        "free_bytes": 8 * GIB, "total_bytes": 16 * GIB, "rpc_devices": [], "error": None,
        "accelerators": [a.model_dump() for a in accelerators], "vulkan_loader": None,
    }  # fmt: skip


def shown(rows: list[dict[str, Any]], width: int = 120) -> list[str]:
    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    console.print(render({"cluster": "gpu", "backends": rows, "reachable": len(rows), "total": len(rows)}))
    return [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]


def test_devices_column() -> None:
    assert shown([row("n1", [RTX]), row("amd", [RX, RADV]), row("cpu1", [LAVAPIPE]), row("n2", [])]) == [
        "cluster 'gpu': 4/4 backends reachable",
        "backend  kind  address         state  version    models (*loaded)  free          busy  node devices",
        "n1       rpc   10.0.0.2:50052  up     rpc 7.0.0  -                 8.0/16.0 GiB  -     cuda RTX 3090 20.0/24.0 GiB",
        "amd      rpc   10.0.0.3:50052  up     rpc 7.0.0  -                 8.0/16.0 GiB  -     rocm Radeon RX 6800 16.0 GiB",
        "                                                                                       vulkan AMD Radeon RX 6800 (RADV",
        "                                                                                       NAVI21)",
        "cpu1     rpc   10.0.0.4:50052  up     rpc 7.0.0  -                 8.0/16.0 GiB  -     vulkan llvmpipe [cpu]",
        "n2       rpc   10.0.0.2:50052  up     rpc 7.0.0  -                 8.0/16.0 GiB  -     -",
    ]


def test_no_column_without_a_gpu() -> None:
    """Mesa's CPU Vulkan device alone (common on machines without a GPU) does not add the column."""
    assert shown([row("cpu1", [LAVAPIPE]), row("n2", [])])[1] == (
        "backend  kind  address         state  version    models (*loaded)  free          busy"
    )


def test_build_column_once_a_node_runs_another_build_than_cpu() -> None:
    rows = [
        row("vk", [LAVAPIPE], "vulkan", "vulkan 0.3.36"),
        row("cpu1", [], "cpu", "cpu 0.3.36"),
        row("n1", [RTX], "cuda", "node_bin_dir"),
        {**row("ol", []), "kind": "ollama", "version": "0.12.6"},
    ]
    assert shown(rows, width=160) == [
        "cluster 'gpu': 4/4 backends reachable",
        "backend  kind    address         state  version    build                models (*loaded)  free          busy  node devices",
        "vk       rpc     10.0.0.2:50052  up     rpc 7.0.0  vulkan 0.3.36        -                 8.0/16.0 GiB  -     vulkan llvmpipe [cpu]",
        "cpu1     rpc     10.0.0.4:50052  up     rpc 7.0.0  cpu 0.3.36           -                 8.0/16.0 GiB  -     -",
        "n1       rpc     10.0.0.2:50052  up     rpc 7.0.0  cuda (node_bin_dir)  -                 8.0/16.0 GiB  -     cuda RTX 3090 20.0/24.0 GiB",
        "ol       ollama  10.0.0.2:50052  up     0.12.6     -                    -                 8.0/16.0 GiB  -     -",
    ]  # fmt: skip


def test_no_build_column_when_every_node_runs_the_cpu_build() -> None:
    assert shown([row("cpu1", [], "cpu", "cpu 0.3.36"), row("n2", [])])[1] == (
        "backend  kind  address         state  version    models (*loaded)  free          busy"
    )
