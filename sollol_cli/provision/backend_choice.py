"""Which llama.cpp build a node runs: the manifest's `backend` (auto, cpu, vulkan, cuda, rocm) against what
the node reported (its accelerators and Vulkan loader) and which builds exist. Pure: a table test reads it.

`auto` takes the fastest build that can work there: CUDA or ROCm on their GPUs when binaries for them exist
(the user's own, or one built on the node: sollol cannot build those on the controller), Vulkan where the node
has a Vulkan GPU and the loader (libvulkan.so.1) to reach it, else the static CPU build. A CPU-type Vulkan
device (Mesa's lavapipe) is no reason for Vulkan: it runs on the same cores as the CPU build, slower.
An explicit choice is taken as asked, unless the node cannot run it at all; then `problem` says why.
`choose_build` adds the binaries: a choice with no build for it is a problem too.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from sollol_cli.provision.services import BinarySource
from sollol_cli.state import Accelerator

VULKAN_LOADER = "libvulkan.so.1"
SOURCES = {"cuda": "nvidia-smi", "rocm": "rocm-smi or /dev/kfd"}  # where each kind's devices come from


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # cpu | vulkan | cuda | rocm
    reason: str
    problem: str | None = None  # set when the node cannot run `backend`; `up` fails this node with it


def choose_backend(
    requested: str,
    accelerators: Sequence[Accelerator],
    vulkan_loader: str | None,
    render_nodes: Sequence[str] = (),
    *,
    builds: Collection[str] = ("cpu", "vulkan"),
) -> BackendChoice:
    """The backend for one node. `builds`: the backends with binaries for this node (the controller's cache,
    `bin_dir`/`node_bin_dir` declared for them, or a build on the node)."""
    kinds = {a.kind for a in accelerators}
    vulkan_gpus = [a for a in accelerators if a.kind == "vulkan" and a.device_type != "cpu"]
    # without vulkaninfo on the node, a render node with a GPU driver behind it is the evidence of a GPU
    vulkan_seen = any(a.kind == "vulkan" for a in accelerators)
    gpu_evidence = [a.name for a in vulkan_gpus] or ([] if vulkan_seen else list(render_nodes))
    if requested == "auto":
        for kind in ("cuda", "rocm"):
            if kind in kinds and kind in builds:
                return BackendChoice(kind, f"auto: {_named(accelerators, kind)} and {kind} binaries")
        if gpu_evidence and vulkan_loader and "vulkan" in builds:
            return BackendChoice("vulkan", f"auto: Vulkan GPU {', '.join(gpu_evidence)}")
        return BackendChoice("cpu", f"auto: {_why_cpu(kinds, builds, gpu_evidence, vulkan_loader)}")
    if requested == "cpu":
        return BackendChoice("cpu", "cpu (set in the manifest)")
    if requested == "vulkan":
        if not vulkan_loader:
            return BackendChoice(
                "vulkan",
                "vulkan (set in the manifest)",
                f"the node has no Vulkan loader ({VULKAN_LOADER}): install it and a Vulkan driver "
                "(Debian: libvulkan1 mesa-vulkan-drivers), or choose another backend",
            )
        return BackendChoice("vulkan", "vulkan (set in the manifest)")
    if requested not in builds:
        return BackendChoice(
            requested,
            f"{requested} (set in the manifest)",
            f"no {requested} binaries for this node: sollol builds only cpu and vulkan on the controller; "
            f"build them on the node (llama_cpp.build: node) or point llama_cpp.node_bin_dir at a {requested} "
            "build there",
        )
    if requested not in kinds:
        return BackendChoice(
            requested,
            f"{requested} (set in the manifest)",
            f"the node reports no {requested} device ({SOURCES.get(requested, requested)})",
        )
    return BackendChoice(requested, f"{requested} (set in the manifest)")


def _named(accelerators: Sequence[Accelerator], kind: str) -> str:
    names = [a.name for a in accelerators if a.kind == kind]
    return f"{len(names)} {kind} device{'s' if len(names) > 1 else ''} ({', '.join(names)})"


def _why_cpu(kinds: set[str], builds: Collection[str], gpu_evidence: list[str], loader: str | None) -> str:
    unbuilt = [kind for kind in ("cuda", "rocm") if kind in kinds and kind not in builds]
    if unbuilt:
        return f"no {'/'.join(unbuilt)} binaries for the node's GPU (and no usable Vulkan GPU)"
    if gpu_evidence and not loader:
        return f"GPU {', '.join(gpu_evidence)} but no Vulkan loader ({VULKAN_LOADER})"
    if gpu_evidence and "vulkan" not in builds:
        return f"Vulkan GPU {', '.join(gpu_evidence)} but no Vulkan build (sollol llama-cpp build --backend vulkan)"
    return "no GPU"


def choose_build(
    requested: str,
    accelerators: Sequence[Accelerator],
    vulkan_loader: str | None,
    render_nodes: Sequence[str],
    builds: Mapping[str, Mapping[str, BinarySource]],
) -> tuple[BackendChoice, str]:
    """The backend for one node and the label of the build it gets (`cpu 0.3.36`, `node_bin_dir`, ...; empty
    with a problem); `builds` maps each backend with binaries to them. A choice without a build has a
    `problem`."""
    choice = choose_backend(requested, accelerators, vulkan_loader, render_nodes, builds=list(builds))
    if choice.problem is not None:
        return choice, ""
    found = builds.get(choice.backend) or {}
    if not found:
        flag = "" if choice.backend == "cpu" else f" --backend {choice.backend}"
        problem = f"no {choice.backend} build of llama.cpp on the controller: run `sollol llama-cpp build{flag}`"
        return BackendChoice(choice.backend, choice.reason, problem), ""
    labels = sorted({source.build for source in found.values()})
    return choice, ", ".join(labels)
