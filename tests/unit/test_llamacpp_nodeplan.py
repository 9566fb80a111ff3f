"""The plan of a llama.cpp build on the node (`llama_cpp.build: node`), as data: the exact commands, CMake
options and environment for each backend on a machine that has its toolkit, and the refusal that names the
package when a tool is missing. Nothing runs: CUDA and ROCm are checked here as plans only."""

from __future__ import annotations

import pytest

from sollol_cli.llamacpp.nodeplan import (
    OLD_VULKAN_HEADERS,
    BuildRefused,
    NodeBuildPlan,
    Toolchain,
    build_key,
    node_build_plan,
)
from tests.unit.test_llamacpp_vulkan_build import COMMON, TAIL

HOME = "/home/ai"
BUILDS = f"{HOME}/.sollol/llama.cpp"
SRC = f"{BUILDS}/src-0.3.36"
BASE = {
    "cmake": "/usr/bin/cmake", "strip": "/usr/bin/strip", "c++": "/usr/bin/c++", "cc": "/usr/bin/cc",
    "ninja": "/usr/bin/ninja",
}  # fmt: skip
# the controller build's options (spelled out in its test) with GGML_NATIVE on: the binaries stay on the node
NATIVE = (*COMMON[:2], "-DGGML_NATIVE=ON", *COMMON[3:], *TAIL)
BOTH = (("rpc-server", "ggml-rpc-server"), ("llama-server", "llama-server"))
CUDA_BOX = Toolchain(
    {**BASE, "nvcc": "/usr/local/cuda/bin/nvcc", "ccache": "/usr/bin/ccache"}, cuda_archs=("8.6", "8.9", "8.6")
)
ROCM_BOX = Toolchain(
    {**BASE, "hipconfig": "/opt/rocm/bin/hipconfig"},
    amd_targets=("gfx1100", "gfx1030"),
    hip_clang_dir="/opt/rocm/llvm/bin",
    hip_path="/opt/rocm",
)


def commands(root: str, options: tuple[str, ...], ccache: str, targets: tuple[str, ...], jobs: str) -> tuple:  # type: ignore[type-arg]
    prefix_map = f"-ffile-prefix-map={SRC}=llama.cpp"
    configure = (
        "/usr/bin/cmake", "-S", SRC, "-B", f"{root}/build", "-G", "Ninja", *options, f"-DGGML_CCACHE={ccache}",
        f"-DCMAKE_C_FLAGS={prefix_map}", f"-DCMAKE_CXX_FLAGS={prefix_map}",
    )  # fmt: skip
    return configure, ("/usr/bin/cmake", "--build", f"{root}/build", "--target", *targets, "-j", jobs)


def expected_plan(
    backend: str, options: tuple[str, ...], env: tuple[tuple[str, str], ...], binaries: tuple[tuple[str, str], ...],
    ccache: str, jobs: str, extra_env: tuple[tuple[str, str], ...] = (),
) -> NodeBuildPlan:  # fmt: skip
    key = build_key(backend, options, env, binaries)
    root = f"{BUILDS}/{key}"
    configure, compile_ = commands(root, options, ccache, tuple(t for _, t in binaries), jobs)
    full_env = (("LC_ALL", "C"), *env, *extra_env)
    return NodeBuildPlan(backend, key, root, binaries, options, configure, compile_, full_env, "/usr/bin/strip")


@pytest.mark.parametrize(
    ("backend", "names", "toolchain", "cpus", "environment", "expected"),
    [
        pytest.param(
            "cuda", ["rpc-server", "llama-server"], CUDA_BOX, 16, {"CCACHE_DIR": "/var/cache/ccache"},
            expected_plan(
                "cuda",
                (*NATIVE, "-DGGML_CUDA=ON", "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc",
                 "-DCMAKE_CUDA_ARCHITECTURES=86;89"),
                (), BOTH, "ON", "16", (("CCACHE_DIR", "/var/cache/ccache"),),
            ),
            id="cuda-archs-from-nvidia-smi",
        ),
        pytest.param(
            "cuda", ["rpc-server"], Toolchain({**BASE, "nvcc": "/usr/bin/nvcc"}), None, {},
            expected_plan(
                "cuda", (*NATIVE, "-DGGML_CUDA=ON", "-DCMAKE_CUDA_COMPILER=/usr/bin/nvcc"), (),
                (("rpc-server", "ggml-rpc-server"),), "OFF", "1",
            ),
            id="cuda-archs-unknown-cmake-native-rpc-only",
        ),
        pytest.param(
            "rocm", ["rpc-server", "llama-server"], ROCM_BOX, 8, {},
            expected_plan(
                "rocm", (*NATIVE, "-DGGML_HIP=ON", "-DGPU_TARGETS=gfx1030;gfx1100"),
                (("HIPCXX", "/opt/rocm/llvm/bin/clang"), ("HIP_PATH", "/opt/rocm")), BOTH, "OFF", "8",
            ),
            id="rocm-targets-from-rocminfo",
        ),
        pytest.param(
            "rocm", ["llama-server"], Toolchain(ROCM_BOX.tools, hip_clang_dir="/usr/lib/llvm-17/bin", hip_path="/usr"),
            2, {},
            expected_plan(
                "rocm", (*NATIVE, "-DGGML_HIP=ON"),
                (("HIPCXX", "/usr/lib/llvm-17/bin/clang"), ("HIP_PATH", "/usr")),
                (("llama-server", "llama-server"),), "OFF", "2",
            ),
            id="rocm-debian-paths-targets-unknown",
        ),
        pytest.param(
            "vulkan", ["rpc-server"], Toolchain({**BASE, "glslc": "/usr/bin/glslc"}, vulkan_headers="new"), 4, {},
            expected_plan("vulkan", (*NATIVE, "-DGGML_VULKAN=ON"), (), (("rpc-server", "ggml-rpc-server"),), "OFF", "4"),
            id="vulkan",
        ),
        pytest.param(
            "cpu", ["rpc-server"], Toolchain({**BASE, "ccache": "/usr/bin/ccache"}), 2, {},
            expected_plan("cpu", NATIVE, (), (("rpc-server", "ggml-rpc-server"),), "ON", "2"),
            id="cpu-native-dynamic",
        ),
    ],
)  # fmt: skip
def test_node_build_plan(
    backend: str,
    names: list[str],
    toolchain: Toolchain,
    cpus: int | None,
    environment: dict[str, str],
    expected: NodeBuildPlan,
) -> None:
    plan = node_build_plan(backend, names, toolchain, home=HOME, cpus=cpus, environment=environment)
    assert plan == expected
    assert isinstance(plan, NodeBuildPlan) and plan.key.startswith(f"node-0.3.36-{backend}-")


MISSING_TOOLCHAIN = "install a C/C++ toolchain and CMake (Debian: apt-get install build-essential cmake ninja-build)"


@pytest.mark.parametrize(
    ("backend", "tools", "problem"),
    [
        ("cpu", {}, "needs cmake, strip, c++, cc, ninja or make (not found); " + MISSING_TOOLCHAIN),
        ("cpu", {**BASE, "ninja": ""}, "needs ninja or make (not found); " + MISSING_TOOLCHAIN),
        ("cuda", BASE, "needs nvcc (not found); " + MISSING_TOOLCHAIN[:-1] + ") and the CUDA toolkit: Debian's "
         "nvidia-cuda-toolkit (non-free) or NVIDIA's cuda-toolkit"),
        ("rocm", BASE, "needs hipconfig (not found); " + MISSING_TOOLCHAIN[:-1] + ") and ROCm's HIP SDK: AMD's "
         "rocm-hip-sdk, or Debian's hipcc libhipblas-dev librocblas-dev"),
        ("vulkan", BASE, "needs glslc, the Vulkan headers (/usr/include/vulkan) (not found); install a C/C++ "
         "toolchain and CMake (Debian: apt-get install build-essential cmake ninja-build glslc libvulkan-dev "
         "spirv-headers)"),
    ],
)  # fmt: skip
def test_a_missing_tool_refuses_the_plan_naming_the_package(backend: str, tools: dict[str, str], problem: str) -> None:
    toolchain = Toolchain({name: path for name, path in tools.items() if path})
    plan = node_build_plan(backend, ["rpc-server"], toolchain, home=HOME, cpus=2)
    assert plan == BuildRefused(backend, f"building llama.cpp ({backend}) on the node {problem}")


def test_rocm_without_hipconfig_answers_is_refused() -> None:
    plan = node_build_plan("rocm", ["rpc-server"], Toolchain(ROCM_BOX.tools), home=HOME, cpus=2)
    assert isinstance(plan, BuildRefused) and "needs hipconfig's answers (-l, -R)" in plan.problem


def test_the_key_follows_what_decides_the_binaries() -> None:
    """Roles (targets), the backend and GPU architectures change the key; CPU count, ccache and the build
    environment do not (they change how fast it builds, not what)."""

    def key(backend: str = "cuda", names: tuple[str, ...] = ("rpc-server",), **changes: object) -> str:
        toolchain = Toolchain(**{"tools": CUDA_BOX.tools, "cuda_archs": ("8.6",), **changes})  # type: ignore[arg-type]
        plan = node_build_plan(backend, names, toolchain, home=HOME, cpus=2)
        assert isinstance(plan, NodeBuildPlan)
        return plan.key

    same = key()
    assert key(cuda_archs=("8.9",)) != same
    assert key(names=("rpc-server", "llama-server")) != same
    assert key("cpu") != same
    assert key(tools={name: path for name, path in CUDA_BOX.tools.items() if name != "ccache"}) == same
    plan = node_build_plan("cuda", ["rpc-server"], Toolchain(CUDA_BOX.tools, cuda_archs=("8.6",)), home=HOME, cpus=64,
                           environment={"CCACHE_DIR": "/x"})  # fmt: skip
    assert isinstance(plan, NodeBuildPlan) and plan.key == same


def test_vulkan_headers_too_old_for_this_llama_cpp_are_refused_before_a_long_build() -> None:
    """Debian 12's headers fail the compile after ~6 minutes; the plan says so at once, unless a Vulkan SDK is
    named for the build."""
    old = Toolchain({**BASE, "glslc": "/usr/bin/glslc"}, vulkan_headers="old")
    refused = node_build_plan("vulkan", ["rpc-server"], old, home=HOME, cpus=2)
    assert refused == BuildRefused("vulkan", OLD_VULKAN_HEADERS)
    assert "older than 1.3.261" in refused.problem and "build: controller" in refused.problem
    sdk = node_build_plan("vulkan", ["rpc-server"], old, home=HOME, cpus=2, environment={"VULKAN_SDK": "/opt/vk"})
    assert isinstance(sdk, NodeBuildPlan) and ("VULKAN_SDK", "/opt/vk") in sdk.env
