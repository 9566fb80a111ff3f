"""Building llama.cpp on the node itself (`llama_cpp.build: node`), as a plan: pure data, tested as tables.

From the backend chosen for the node, the tools and GPU architectures its facts report and the roles it has,
the plan says exactly what runs there: the CMake options (sollol's common ones, cmake.py, with GGML_NATIVE=ON:
the binaries run only on this machine), the configure and compile commands, the environment, and where the
result goes. A missing tool refuses the plan before anything runs, naming the package to install.

The result is cached on the node in a directory named by llama.cpp's version, the backend and a hash of the
plan's options and targets (`$HOME/.sollol/llama.cpp/node-0.3.36-cuda-<hash>`); its `build.json` is written
last, after the binaries and their checksums, so a directory with one is a complete build.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sollol_cli.llamacpp.cmake import (
    BACKEND_OPTION,
    BACKEND_TOOLS,
    GENERATORS,
    TAIL_OPTIONS,
    TARGETS,
    TOOLCHAIN,
    base_options,
    build_commands,
    install_hint,
    missing_tools,
)
from sollol_cli.llamacpp.sdist import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION, SDIST_NAME, VENDOR_PREFIX

NODE_BUILDS_DIR = ".sollol/llama.cpp"  # below the node user's home
NODE_BUILD_PREFIX = "node-"
# every tool the facts look for: what a build needs, plus ccache (used when there)
PROBED_TOOLS = (*TOOLCHAIN, *GENERATORS, "ccache", *(tool for tools in BACKEND_TOOLS.values() for tool in tools))
CCACHE_OPTION = "-DGGML_CCACHE"
MARKER = "build.json"
SUMS = "sha256sums"


@dataclass(frozen=True)
class Toolchain:
    """What a node has to build with, from its facts."""

    tools: Mapping[str, str] = field(default_factory=dict)  # name -> path on the node
    cuda_archs: tuple[str, ...] = ()  # compute capabilities as nvidia-smi reports them: "8.6"
    amd_targets: tuple[str, ...] = ()  # LLVM targets of the node's AMD GPUs (rocminfo): "gfx1030"
    hip_clang_dir: str | None = None  # `hipconfig -l`: the directory of ROCm's clang
    hip_path: str | None = None  # `hipconfig -R`: the ROCm root
    vulkan_headers: str | None = None  # /usr/include's Vulkan C++ headers: "new", "old" (too old), None: none


@dataclass(frozen=True)
class NodeBuildPlan:
    """A build on the node: run `configure` then `compile` with `env`, install `binaries` into `root/bin`."""

    backend: str
    key: str  # the directory name: version, backend and a hash of what decides the binaries
    root: str  # absolute, on the node
    binaries: tuple[tuple[str, str], ...]  # installed name, CMake target
    options: tuple[str, ...]
    configure: tuple[str, ...]
    compile: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    strip: str

    @property
    def label(self) -> str:
        return f"node {self.backend} {LLAMA_CPP_PYTHON_VERSION}"

    @property
    def source_dir(self) -> str:
        return source_dir(self.root.rsplit("/", 1)[0])

    def binary_path(self, name: str) -> str:
        return f"{self.root}/bin/{name}"


@dataclass(frozen=True)
class BuildRefused:
    """The node cannot build `backend`: `problem` says what to install."""

    backend: str
    problem: str


OLD_VULKAN_HEADERS = (
    "the node's Vulkan headers (/usr/include/vulkan) are older than 1.3.261, which this llama.cpp needs "
    "(no vk::LayerSettingEXT; Debian 12 has 1.3.239): install newer ones (Debian 13's libvulkan-dev) or a Vulkan "
    "SDK (VULKAN_SDK in llama_cpp.build_environment), or use build: controller, whose Vulkan build brings its own"
)


def builds_dir(home: str) -> str:
    return f"{home.rstrip('/')}/{NODE_BUILDS_DIR}"


def source_dir(builds: str) -> str:
    """The pinned sources, extracted once per node and shared by its builds."""
    return f"{builds}/src-{LLAMA_CPP_PYTHON_VERSION}"


def tarball_path(home: str) -> str:
    return f"{builds_dir(home)}/{SDIST_NAME}"


def backend_options(backend: str, toolchain: Toolchain) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The backend's CMake options and environment, as llama.cpp's build docs of the pinned release give them.
    CUDA: the node's compute capabilities (`8.6` -> `86`) when nvidia-smi reported them (else CMake's `native`
    under GGML_NATIVE), and the nvcc found. ROCm: HIPCXX and HIP_PATH from hipconfig, GPU_TARGETS from the
    node's gfx targets when known (else every GPU present at build time; AMDGPU_TARGETS is the older name)."""
    options = [BACKEND_OPTION[backend]] if backend in BACKEND_OPTION else []
    env: list[tuple[str, str]] = []
    if backend == "cuda":
        options.append(f"-DCMAKE_CUDA_COMPILER={toolchain.tools['nvcc']}")
        archs = sorted({arch.replace(".", "") for arch in toolchain.cuda_archs}, key=int)
        if archs:
            options.append(f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}")
    elif backend == "rocm":
        if toolchain.hip_clang_dir:
            env.append(("HIPCXX", f"{toolchain.hip_clang_dir.rstrip('/')}/clang"))
        if toolchain.hip_path:
            env.append(("HIP_PATH", toolchain.hip_path))
        if toolchain.amd_targets:
            options.append(f"-DGPU_TARGETS={';'.join(sorted(set(toolchain.amd_targets)))}")
    return tuple(options), tuple(env)


def node_build_plan(
    backend: str,
    names: Collection[str],
    toolchain: Toolchain,
    *,
    home: str,
    cpus: int | None,
    environment: Mapping[str, str] = {},
) -> NodeBuildPlan | BuildRefused:
    """The build of `names` (installed names: rpc-server, llama-server: only what the node's roles run) for
    `backend` on a node whose user's home is `home`. `environment` is the manifest's build environment
    (CCACHE_DIR, ...)."""
    missing = missing_tools(backend, toolchain.tools)
    if backend == "rocm" and "hipconfig" not in missing and not (toolchain.hip_clang_dir and toolchain.hip_path):
        missing.append("hipconfig's answers (-l, -R)")
    # a Vulkan SDK named in the build environment brings its own headers; else the system's must do
    if backend == "vulkan" and "VULKAN_SDK" not in environment:
        if toolchain.vulkan_headers == "old":
            return BuildRefused(backend, OLD_VULKAN_HEADERS)
        if toolchain.vulkan_headers is None:
            missing.append("the Vulkan headers (/usr/include/vulkan)")
    if missing:
        problem = f"building llama.cpp ({backend}) on the node needs {', '.join(missing)} (not found); "
        return BuildRefused(backend, problem + install_hint(backend))
    own, env = backend_options(backend, toolchain)
    options = (*base_options(native=True), *TAIL_OPTIONS, *own)
    binaries = tuple((name, TARGETS[name]) for name in TARGETS if name in names)
    key = build_key(backend, options, env, binaries)
    # ccache makes no other binaries, so it is not in the key: installing it later rebuilds nothing
    ccache = f"{CCACHE_OPTION}={'ON' if 'ccache' in toolchain.tools else 'OFF'}"
    root = f"{builds_dir(home)}/{key}"
    configure, compile_ = build_commands(
        source_dir(builds_dir(home)), f"{root}/build", toolchain.tools, cpus or 1, (*options, ccache),
        [target for _, target in binaries],
    )  # fmt: skip
    full_env = (("LC_ALL", "C"), *env, *sorted(environment.items()))  # progress lines and errors untranslated
    return NodeBuildPlan(
        backend, key, root, binaries, options, tuple(configure), tuple(compile_), full_env, toolchain.tools["strip"]
    )


def build_key(
    backend: str, options: tuple[str, ...], env: tuple[tuple[str, str], ...], binaries: tuple[tuple[str, str], ...]
) -> str:
    payload = json.dumps([LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_COMMIT, backend, options, env, binaries])
    digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
    return f"{NODE_BUILD_PREFIX}{LLAMA_CPP_PYTHON_VERSION}-{backend}-{digest}"


# --- the shell text that runs the plan on the node --------------------------------------------------------

STEP = "sollol-build-step"  # `STEP name` lines: which step the output that follows belongs to
EXIT = "sollol-build-exit"  # the last line: the build's exit status
CACHED = "sollol-build-cached"  # another run finished the same build while this one waited for the lock
ROOT_WORD, DIR_WORD = '"$root"', '"$d"'  # the shell variables holding a build's directory


def build_script(plan: NodeBuildPlan, tarball: str, log: str, skipped_dirs: Collection[str]) -> str:
    """POSIX shell running the plan: one build per directory at a time (flock, when the node has it), the
    sources extracted from the uploaded sdist once, every line of output into `log` and to stdout, `build.json`
    written last. Prints `STEP` lines between steps and `EXIT <status>` at the end."""
    q = shlex.quote
    src = plan.source_dir
    env = " ".join(f"{key}={q(value)}" for key, value in plan.env)
    excludes = " ".join(q(f"--exclude={VENDOR_PREFIX}{name}") for name in sorted(skipped_dirs))
    strip_components = VENDOR_PREFIX.rstrip("/").count("/") + 1
    record = json.dumps(
        {"key": plan.key, "version": LLAMA_CPP_PYTHON_VERSION, "commit": LLAMA_CPP_COMMIT, "backend": plan.backend,
         "binaries": [name for name, _ in plan.binaries], "cmake_options": list(plan.options)},
        indent=2,
    )  # fmt: skip
    install = "\n".join(
        f"  cp {q(f'{plan.root}/build/bin/{target}')} {q(f'bin.new/{name}')}\n"
        f"  {q(plan.strip)} --strip-all {q(f'bin.new/{name}')}"
        for name, target in plan.binaries
    )
    body = f"""\
  set -e
  echo {STEP} source
  if [ ! -f {q(src)}/.sollol-extracted ]; then
    rm -rf {q(src)} && mkdir -p {q(src)}
    tar -xzf {q(tarball)} -C {q(src)} --strip-components={strip_components} {excludes} {q(VENDOR_PREFIX.rstrip("/"))}
    echo {q(LLAMA_CPP_COMMIT)} > {q(src)}/.sollol-extracted
  fi
  echo {STEP} configure
  env {env} {" ".join(q(arg) for arg in plan.configure)}
  echo {STEP} compile
  env {env} {" ".join(q(arg) for arg in plan.compile)}
  echo {STEP} install
  cd {q(plan.root)} && rm -rf bin.new && mkdir bin.new
{install}
  rm -rf bin && mv bin.new bin && (cd bin && sha256sum *) > {SUMS}.tmp && mv {SUMS}.tmp {SUMS}
  printf '%s\\n' {q(record)} > {MARKER}.tmp && mv {MARKER}.tmp {MARKER}"""
    return f"""\
root={q(plan.root)}; log={q(log)}
mkdir -p "$root" "$(dirname "$log")" && exec 9>>"$root/.lock" || exit 1
if command -v flock >/dev/null 2>&1 && ! flock -n 9; then echo "{STEP} waiting"; flock 9; fi
if {complete(ROOT_WORD)}; then echo {CACHED}; exit 0; fi
rm -f "$root/{MARKER}" "$root/{SUMS}"
{{ (
{body}
) 2>&1; echo "{EXIT} $?"; }} | tee "$log"
"""


def cached_builds_probe(home_var: str = '"$HOME"') -> str:
    """Facts-script lines: `nodebuild=<key>` for each complete build on the node (marker present and every
    binary matching its checksum)."""
    return (
        f"for m in {home_var}/{NODE_BUILDS_DIR}/{NODE_BUILD_PREFIX}*/{MARKER}; do "
        f'd=$(dirname "$m"); {complete(DIR_WORD)} && echo "nodebuild=$(basename "$d")"; done'
    )


def complete(directory: str) -> str:
    """Shell test: `directory` (a shell word) holds a complete build: its marker, and every binary matching
    the checksum recorded with it (a binary changed or removed since is no build to run)."""
    return f"[ -f {directory}/{MARKER} ] && (cd {directory}/bin && sha256sum -c --quiet ../{SUMS} >/dev/null 2>&1)"
