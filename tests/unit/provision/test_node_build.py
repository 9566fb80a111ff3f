"""`llama_cpp.build: node` and per-node binaries in `up`'s plan, as data: which node builds, what it builds,
that a build already on the node is not repeated, that a missing tool fails only that node's llama.cpp
services before anything runs; the facts that feed it; and a node's own bin_dir winning over the cluster's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sollol_cli.llamacpp.nodeplan import NodeBuildPlan, Toolchain
from sollol_cli.manifest.models import Cluster, LlamaCppBuild
from sollol_cli.provision.cluster import node_builds
from sollol_cli.provision.facts import parse_facts
from sollol_cli.provision.plan import BuildOnNode, describe, desired_on, plan_up
from sollol_cli.settings import Settings
from sollol_cli.state import Accelerator

TOOLS = {"cmake": "/usr/bin/cmake", "strip": "/usr/bin/strip", "c++": "/usr/bin/c++", "cc": "/usr/bin/cc",
         "make": "/usr/bin/make"}  # fmt: skip
HOME = "/home/ai"
RTX = Accelerator(kind="cuda", name="RTX 3090")


def cluster(node: dict, **top: object) -> Cluster:  # type: ignore[type-arg]
    return Cluster.model_validate({"name": "lab", "nodes": [{"name": "n1", "address": "10.0.0.1", **node}], **top})


def planned(c: Cluster, **facts_kw: Any) -> tuple[list[str], NodeBuildPlan | None]:
    facts = replace(parse_facts("home=/home/ai\ncpus=4\n"), **facts_kw)
    want = desired_on(c, c.nodes[0], {}, facts)
    plan = plan_up("n1", want.services, want.sources, facts, backend=want.choice, build=want.build,
                   node_build=want.node_build)  # fmt: skip
    return [describe(step) for step in plan.steps], want.node_build


def test_an_rpc_node_builds_only_the_rpc_server_and_runs_it_from_there() -> None:
    steps, build = planned(cluster({"rpc": {}, "llama_cpp": {"build": "node", "backend": "cpu"}}),
                           toolchain=Toolchain(TOOLS))  # fmt: skip
    assert build is not None
    root = f"{HOME}/.sollol/llama.cpp/{build.key}"
    assert steps == [
        "llama.cpp cpu (node cpu 0.3.36): cpu (set in the manifest)",
        f"build llama.cpp cpu on the node (ggml-rpc-server) -> {root}",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]
    c = cluster({"rpc": {}, "llama_cpp": {"build": "node", "backend": "cpu"}})
    want = desired_on(c, c.nodes[0], {}, parse_facts(f"home={HOME}\n"))
    assert want.node_build is None  # no toolchain in these facts
    assert want.choice is not None and want.choice.problem is not None


def test_a_build_already_on_the_node_is_not_repeated() -> None:
    c = cluster({"rpc": {}, "llamacpp": {"model": "/m.gguf"}}, llama_cpp={"build": "node", "backend": "cpu"})
    _, build = planned(c, toolchain=Toolchain(TOOLS), files=frozenset({"/m.gguf"}))
    assert build is not None and [t for _, t in build.binaries] == ["ggml-rpc-server", "llama-server"]
    steps, _ = planned(c, toolchain=Toolchain(TOOLS), files=frozenset({"/m.gguf"}), node_builds=frozenset({build.key}))
    assert not any(step.startswith("build ") for step in steps), steps
    assert steps[0] == "llama.cpp cpu (node cpu 0.3.36): cpu (set in the manifest)"


def test_auto_on_a_cuda_node_plans_a_cuda_build_and_a_missing_nvcc_fails_the_node_alone() -> None:
    c = cluster({"rpc": {}, "ollama": {}, "llama_cpp": {"build": "node"}})
    toolchain = Toolchain({**TOOLS, "nvcc": "/usr/local/cuda/bin/nvcc"}, cuda_archs=("8.6",))
    steps, build = planned(c, toolchain=toolchain, accelerators=(RTX,), ollama_path="/usr/bin/ollama")
    assert build is not None and "-DCMAKE_CUDA_ARCHITECTURES=86" in build.options
    assert steps[:2] == [
        "llama.cpp cuda (node cuda 0.3.36): auto: 1 cuda device (RTX 3090) and cuda binaries",
        f"build llama.cpp cuda on the node (ggml-rpc-server) -> {build.root}",
    ]
    steps, build = planned(c, toolchain=Toolchain(TOOLS), accelerators=(RTX,), ollama_path="/usr/bin/ollama")
    assert build is None
    assert steps == [
        "llama.cpp cuda: auto: 1 cuda device (RTX 3090) and cuda binaries",
        "fail sollol-lab-rpc-50052: building llama.cpp (cuda) on the node needs nvcc (not found); install a C/C++ "
        "toolchain and CMake (Debian: apt-get install build-essential cmake ninja-build) and the CUDA toolkit: "
        "Debian's nvidia-cuda-toolkit (non-free) or NVIDIA's cuda-toolkit",
        "start sollol-lab-ollama-11434 on 10.0.0.1:11434 [process]: not running",
    ]


def test_the_build_environment_reaches_the_plan() -> None:
    c = cluster(
        {"rpc": {}, "llama_cpp": {"build": "node", "build_environment": {"CCACHE_DIR": "/c/node"}}},
        llama_cpp={"backend": "cpu", "build_environment": {"CCACHE_DIR": "/c/cluster", "CCACHE_MAXSIZE": 2}},
    )
    _, build = planned(c, toolchain=Toolchain(TOOLS))
    assert build is not None
    assert build.env == (("LC_ALL", "C"), ("CCACHE_DIR", "/c/node"), ("CCACHE_MAXSIZE", "2"))


def test_facts_report_the_toolchain_gpu_architectures_and_builds() -> None:
    facts = parse_facts(
        "tool=cmake /usr/bin/cmake\ntool=nvcc /usr/local/cuda/bin/nvcc\ncuda_cc=8.6\ncuda_cc=N/A\ncuda_cc=8.9\n"
        "gfx=gfx1100\ngfx=gfx1030\ngfx=gfx1100\nhip_clang=/opt/rocm/llvm/bin\nhip_path=/opt/rocm\n"
        "nodebuild=node-0.3.36-cpu-0123456789ab\nvulkan_headers=old\n"
    )
    assert facts.toolchain == Toolchain(
        {"cmake": "/usr/bin/cmake", "nvcc": "/usr/local/cuda/bin/nvcc"},
        cuda_archs=("8.6", "8.9"),
        amd_targets=("gfx1030", "gfx1100"),
        hip_clang_dir="/opt/rocm/llvm/bin",
        hip_path="/opt/rocm",
        vulkan_headers="old",
    )
    assert facts.node_builds == frozenset({"node-0.3.36-cpu-0123456789ab"})


def test_a_nodes_own_binaries_win_over_the_clusters(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    for directory in (mine, theirs):
        directory.mkdir()
        for name in ("rpc-server", "llama-server"):
            (directory / name).write_text(f"{directory.name} {name}")
    c = Cluster.model_validate({
        "name": "lab",
        "llama_cpp": {"bin_dir": str(theirs)},
        "nodes": [
            {"name": "a", "address": "10.0.0.1", "rpc": {}},
            {"name": "b", "address": "10.0.0.2", "rpc": {}, "llama_cpp": {"bin_dir": str(mine)}},
            {"name": "c", "address": "10.0.0.3", "rpc": {}, "llama_cpp": {"node_bin_dir": "/opt/llama"}},
            {"name": "d", "address": "10.0.0.4", "rpc": {}, "llama_cpp": {"build": "node"}},
            {"name": "e", "address": "10.0.0.5", "ollama": {}},
        ],
    })  # fmt: skip
    builds = node_builds(c, Settings(cache_dir=tmp_path / "cache"))
    assert builds["a"]["cpu"]["rpc-server"].local_path == str(theirs / "rpc-server")
    assert builds["b"]["cuda"]["rpc-server"].local_path == str(mine / "rpc-server")
    assert builds["c"]["rocm"]["rpc-server"].remote_path == "/opt/llama/rpc-server"
    assert builds["d"] == builds["e"] == {}
    assert [c.llama_cpp.for_node(n).build for n in c.nodes] == [LlamaCppBuild.controller] * 3 + [
        LlamaCppBuild.node,
        LlamaCppBuild.controller,
    ]


@pytest.mark.parametrize(
    ("node", "top", "builds"),
    [
        ({"rpc": {}}, {"llama_cpp": {"build": "node"}}, True),
        ({"rpc": {}, "llama_cpp": {"build": "controller"}}, {"llama_cpp": {"build": "node"}}, False),
        ({"rpc": {}, "llama_cpp": {"bin_dir": "/x"}}, {"llama_cpp": {"build": "node"}}, False),
        ({"ollama": {}}, {"llama_cpp": {"build": "node"}}, False),
        ({"rpc": {}, "llama_cpp": {"build": "node"}}, {"llama_cpp": {"node_bin_dir": "/opt/llama"}}, True),
    ],
)
def test_which_nodes_build_their_own(node: dict, top: dict, builds: bool) -> None:  # type: ignore[type-arg]
    c = cluster(node, **top)
    assert c.builds_on_node(c.nodes[0]) is builds


def test_a_build_step_is_a_change() -> None:
    c = cluster({"rpc": {}, "llama_cpp": {"build": "node", "backend": "cpu"}})
    want = desired_on(
        c, c.nodes[0], {}, parse_facts(f"home={HOME}\n" + "".join(f"tool={k} {v}\n" for k, v in TOOLS.items()))
    )
    plan = plan_up("n1", want.services, want.sources, parse_facts(""), backend=want.choice, node_build=want.node_build)
    assert plan.changes and any(isinstance(step, BuildOnNode) for step in plan.steps)
