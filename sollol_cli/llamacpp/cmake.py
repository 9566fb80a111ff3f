"""What every llama.cpp build of sollol's has in common, wherever it runs: the CMake options, the configure and
compile command lines, the tools each backend needs and the packages that provide them. Pure data.

The controller's build (build.py) makes portable binaries for other machines (GGML_NATIVE=OFF, static for
the CPU); a build on the node itself (nodeplan.py) is for that machine only (GGML_NATIVE=ON). Both start from
the options here, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import PurePath

from sollol_cli.llamacpp.sdist import LLAMA_CPP_COMMIT

# installed name -> CMake target (upstream renamed the rpc-server target to ggml-rpc-server)
TARGETS = {"rpc-server": "ggml-rpc-server", "llama-server": "llama-server"}
STATIC_LINK = "-DCMAKE_EXE_LINKER_FLAGS=-static"
TAIL_OPTIONS = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # ON downloads the web UI during the build
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
    "-DLLAMA_BUILD_NUMBER=0",
)
# the backend's own switch (cpu has none: ggml always has the CPU backend)
BACKEND_OPTION = {"vulkan": "-DGGML_VULKAN=ON", "cuda": "-DGGML_CUDA=ON", "rocm": "-DGGML_HIP=ON"}

TOOLCHAIN = ("cmake", "strip", "c++", "cc")
BACKEND_TOOLS = {"vulkan": ("glslc",), "cuda": ("nvcc",), "rocm": ("hipconfig",)}
GENERATORS = ("ninja", "make")
# Debian packages a Vulkan build needs besides the CPU build's (the headers may still be too old: see
# vulkan_headers.py); the binaries need only the loader (libvulkan1) and a driver on the node
VULKAN_PACKAGES = "glslc libvulkan-dev spirv-headers"
TOOLCHAIN_PACKAGES = "build-essential cmake ninja-build"
# the GPU toolkits come from their vendors as well as from Debian; name both
BACKEND_PACKAGES = {
    "vulkan": f"apt-get install {VULKAN_PACKAGES}",
    "cuda": "the CUDA toolkit: Debian's nvidia-cuda-toolkit (non-free) or NVIDIA's cuda-toolkit",
    "rocm": "ROCm's HIP SDK: AMD's rocm-hip-sdk, or Debian's hipcc libhipblas-dev librocblas-dev",
}


def base_options(*, native: bool) -> tuple[str, ...]:
    """The options of every build. `native`: optimise for this machine's CPU (a build on the node that runs
    it), else for any x86-64 (binaries copied to other machines)."""
    return (
        "-DCMAKE_BUILD_TYPE=Release",
        "-DGGML_RPC=ON",
        f"-DGGML_NATIVE={'ON' if native else 'OFF'}",
        "-DBUILD_SHARED_LIBS=OFF",  # ggml linked into each binary: the two files are the whole build
        "-DGGML_OPENMP=OFF",
    )


def build_commands(
    source: PurePath | str,
    build_dir: PurePath | str,
    tools: Mapping[str, str],
    jobs: int,
    options: Sequence[str],
    targets: Collection[str] = tuple(TARGETS.values()),
) -> tuple[list[str], list[str]]:
    """The configure and compile command lines (a plan: nothing runs here)."""
    generator = ["-G", "Ninja"] if "ninja" in tools else ["-G", "Unix Makefiles"]
    # map the build path out of __FILE__ strings so the binaries do not depend on where the cache is
    prefix_map = f"-ffile-prefix-map={source}=llama.cpp"
    configure = [
        tools["cmake"], "-S", str(source), "-B", str(build_dir), *generator, *options,
        f"-DCMAKE_C_FLAGS={prefix_map}", f"-DCMAKE_CXX_FLAGS={prefix_map}",
    ]  # fmt: skip
    compile_ = [tools["cmake"], "--build", str(build_dir), "--target", *targets, "-j", str(jobs)]
    return configure, compile_


def missing_tools(backend: str, found: Mapping[str, str | None]) -> list[str]:
    """The tools a build for `backend` needs that `found` (name -> path, None or absent: not there) lacks."""
    missing = [name for name in (*TOOLCHAIN, *BACKEND_TOOLS.get(backend, ())) if not found.get(name)]
    if not any(found.get(name) for name in GENERATORS):
        missing.append("ninja or make")
    return missing


def install_hint(backend: str) -> str:
    """What to install for a build of `backend` (Debian's names; the GPU toolkits' vendors' too)."""
    base = "install a C/C++ toolchain and CMake (Debian: apt-get install " + TOOLCHAIN_PACKAGES
    if backend in ("cpu", "vulkan"):
        return base + (f" {VULKAN_PACKAGES})" if backend == "vulkan" else ")")
    return f"{base}) and {BACKEND_PACKAGES[backend]}"
