"""The backend choice per node, as a table: what was asked, what the node reported, which builds exist."""

from __future__ import annotations

import pytest

from sollol_cli.provision.backend_choice import BackendChoice, choose_backend, choose_build
from sollol_cli.provision.services import BinarySource
from sollol_cli.state import Accelerator

LOADER = "/lib/x86_64-linux-gnu/libvulkan.so.1"
RTX = Accelerator(kind="cuda", name="RTX 3090", memory_total=24 << 30, memory_free=23 << 30, driver="550.54")
RTX_VK = Accelerator(kind="vulkan", name="NVIDIA GeForce RTX 3090", driver="NVIDIA 550.54")
RX = Accelerator(kind="rocm", name="Radeon RX 7900 XTX", memory_total=24 << 30, driver="amdgpu")
RADV = Accelerator(kind="vulkan", name="AMD Radeon RX 7900 XTX (RADV NAVI31)", driver="radv")
LAVAPIPE = Accelerator(kind="vulkan", name="llvmpipe (LLVM 15.0.6, 256 bits)", driver="llvmpipe", device_type="cpu")
IGPU = Accelerator(kind="vulkan", name="Intel(R) UHD Graphics 770", driver="anv", device_type="integrated")
NO_LOADER = "the node has no Vulkan loader (libvulkan.so.1): install it and a Vulkan driver (Debian: libvulkan1 mesa-vulkan-drivers), or choose another backend"  # noqa: E501
CPU_VK = ("cpu", "vulkan")

CASES = [
    # (id, requested, accelerators, loader, render nodes, builds, expected)
    ("auto-no-gpu", "auto", [], None, [], CPU_VK, BackendChoice("cpu", "auto: no GPU")),
    ("auto-lavapipe-only", "auto", [LAVAPIPE], LOADER, [], CPU_VK, BackendChoice("cpu", "auto: no GPU")),
    ("auto-vulkan-gpu", "auto", [RADV, LAVAPIPE], LOADER, [], CPU_VK,
     BackendChoice("vulkan", "auto: Vulkan GPU AMD Radeon RX 7900 XTX (RADV NAVI31)")),
    ("auto-integrated-gpu", "auto", [IGPU], LOADER, [], CPU_VK,
     BackendChoice("vulkan", "auto: Vulkan GPU Intel(R) UHD Graphics 770")),
    ("auto-render-node-without-vulkaninfo", "auto", [], LOADER, ["renderD128 (amdgpu)"], CPU_VK,
     BackendChoice("vulkan", "auto: Vulkan GPU renderD128 (amdgpu)")),
    ("auto-vulkaninfo-overrules-render-node", "auto", [LAVAPIPE], LOADER, ["renderD128 (vgem)"], CPU_VK,
     BackendChoice("cpu", "auto: no GPU")),
    ("auto-gpu-without-loader", "auto", [RADV], None, [], CPU_VK,
     BackendChoice("cpu", "auto: GPU AMD Radeon RX 7900 XTX (RADV NAVI31) but no Vulkan loader (libvulkan.so.1)")),
    ("auto-nvidia-without-cuda-binaries-uses-vulkan", "auto", [RTX, RTX_VK], LOADER, [], CPU_VK,
     BackendChoice("vulkan", "auto: Vulkan GPU NVIDIA GeForce RTX 3090")),
    ("auto-nvidia-with-cuda-binaries", "auto", [RTX, RTX_VK], LOADER, [], ("cpu", "vulkan", "cuda"),
     BackendChoice("cuda", "auto: 1 cuda device (RTX 3090) and cuda binaries")),
    ("auto-nvidia-nothing-usable", "auto", [RTX], None, [], CPU_VK,
     BackendChoice("cpu", "auto: no cuda binaries for the node's GPU (and no usable Vulkan GPU)")),
    ("auto-amd-with-rocm-binaries", "auto", [RX, RADV], LOADER, [], ("cpu", "rocm"),
     BackendChoice("rocm", "auto: 1 rocm device (Radeon RX 7900 XTX) and rocm binaries")),
    ("cpu-on-a-gpu-node", "cpu", [RTX, RTX_VK], LOADER, [], CPU_VK, BackendChoice("cpu", "cpu (set in the manifest)")),
    ("vulkan-on-lavapipe", "vulkan", [LAVAPIPE], LOADER, [], CPU_VK,
     BackendChoice("vulkan", "vulkan (set in the manifest)")),
    ("vulkan-without-loader", "vulkan", [], None, [], CPU_VK,
     BackendChoice("vulkan", "vulkan (set in the manifest)", NO_LOADER)),
    ("cuda-without-binaries", "cuda", [RTX], None, [], CPU_VK,
     BackendChoice("cuda", "cuda (set in the manifest)", "no cuda binaries for this node: sollol builds only cpu and "
                   "vulkan on the controller; build them on the node (llama_cpp.build: node) or point "
                   "llama_cpp.node_bin_dir at a cuda build there")),
    ("cuda-without-a-cuda-device", "cuda", [RADV], LOADER, [], ("cpu", "cuda"),
     BackendChoice("cuda", "cuda (set in the manifest)", "the node reports no cuda device (nvidia-smi)")),
    ("rocm-without-a-rocm-device", "rocm", [], None, [], ("rocm",),
     BackendChoice("rocm", "rocm (set in the manifest)", "the node reports no rocm device (rocm-smi or /dev/kfd)")),
    ("cuda-with-binaries", "cuda", [RTX], None, [], ("cuda",), BackendChoice("cuda", "cuda (set in the manifest)")),
    ("auto-vulkan-gpu-without-a-vulkan-build", "auto", [RADV], LOADER, [], ("cpu",),
     BackendChoice("cpu", "auto: Vulkan GPU AMD Radeon RX 7900 XTX (RADV NAVI31) but no Vulkan build "
                   "(sollol llama-cpp build --backend vulkan)")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("requested", "accelerators", "loader", "render_nodes", "builds", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_choose_backend(
    requested: str,
    accelerators: list[Accelerator],
    loader: str | None,
    render_nodes: list[str],
    builds: tuple[str, ...],
    expected: BackendChoice,
) -> None:
    assert choose_backend(requested, accelerators, loader, render_nodes, builds=builds) == expected


def _builds(*backends: str) -> dict[str, dict[str, BinarySource]]:
    return {b: {"rpc-server": BinarySource("rpc-server", f"/x/{b}/rpc-server", build=f"{b} 0.3.36")} for b in backends}


BUILD_CASES = [
    # (id, requested, accelerators, loader, builds, expected choice, expected build label)
    ("cpu-build", "auto", [], None, _builds("cpu", "vulkan"), BackendChoice("cpu", "auto: no GPU"), "cpu 0.3.36"),
    ("vulkan-build", "vulkan", [LAVAPIPE], LOADER, _builds("cpu", "vulkan"),
     BackendChoice("vulkan", "vulkan (set in the manifest)"), "vulkan 0.3.36"),
    ("vulkan-not-built", "vulkan", [LAVAPIPE], LOADER, _builds("cpu"),
     BackendChoice("vulkan", "vulkan (set in the manifest)", "no vulkan build of llama.cpp on the controller: "
                   "run `sollol llama-cpp build --backend vulkan`"), ""),
    ("cpu-not-built", "auto", [], None, _builds("vulkan"),
     BackendChoice("cpu", "auto: no GPU", "no cpu build of llama.cpp on the controller: run `sollol llama-cpp build`"),
     ""),
    ("no-loader-wins-over-no-build", "vulkan", [], None, _builds("cpu"),
     BackendChoice("vulkan", "vulkan (set in the manifest)", NO_LOADER), ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("requested", "accelerators", "loader", "builds", "expected", "label"),
    [pytest.param(*case[1:], id=case[0]) for case in BUILD_CASES],
)
def test_choose_build(
    requested: str,
    accelerators: list[Accelerator],
    loader: str | None,
    builds: dict[str, dict[str, BinarySource]],
    expected: BackendChoice,
    label: str,
) -> None:
    assert choose_build(requested, accelerators, loader, [], builds) == (expected, label)
