"""`llama_cpp.build: node` for real: `up` builds llama.cpp's rpc-server on an SSH test node with the node's own
toolchain (the test nodes share this machine's files, so its cmake and compiler), runs the rpc-server from
that build, and a second `up` finds the build on the node and builds nothing; `sollol logs NODE build` shows
the build's output.

Only the rpc-server target is built (an rpc-only node), with ccache pointed at a directory kept across runs
(the harness puts ~/.cache/sollol/ccache at the same place in every node's /root): a warm run still
configures and links on the node, but compiles from the cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sollol_cli.llamacpp.build import LlamaCppBinaries
from sollol_cli.llamacpp.nodeplan import OLD_VULKAN_HEADERS
from sollol_cli.llamacpp.sdist import LLAMA_CPP_PYTHON_VERSION, RPC_PROTOCOL_VERSION
from sollol_cli.llamacpp.vulkan_headers import headers_new_enough
from tests.harness.sshhosts import CCACHE_DIR, TestHosts
from tests.real.provisioning import module_cluster
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("shared_state")]
PORT = 50262
BUILDS = "/root/.sollol/llama.cpp"
BUILD = f"{{build: node, backend: cpu, build_environment: {{CCACHE_DIR: {CCACHE_DIR}}}}}"  # a node's llama_cpp


@pytest.fixture(scope="module")
def manifest(ssh_nodes: TestHosts, tmp_path_factory: pytest.TempPathFactory, state_dir: Path) -> Iterator[Path]:
    if not ssh_nodes.isolated:
        pytest.skip("needs test nodes with their own /root (network namespaces)")
    roles = {"node1": f"rpc: {{port: {PORT}}}\nllama_cpp: {BUILD}"}
    path = tmp_path_factory.mktemp("node-build") / "cluster.yaml"
    path.write_text(ssh_nodes.manifest_yaml(roles, name="nodebuild", nodes=ssh_nodes.nodes[:1]))
    with module_cluster(path, state_dir):  # module-scoped: set up before shared_state sets it per test
        yield path


def up(manifest: Path) -> dict[str, Any]:
    result = invoke("up", str(manifest), "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (node,) = json.loads(result.stdout)["nodes"]
    return node  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def first(manifest: Path) -> dict[str, Any]:
    return up(manifest)


def build_dir(node: dict[str, Any]) -> str:
    (step,) = [step for step in node["plan"] if step.startswith("build llama.cpp")]
    return str(step.rsplit(" -> ", 1)[1])


def test_up_builds_the_rpc_server_on_the_node_and_runs_it(first: dict[str, Any], ssh_nodes: TestHosts) -> None:
    assert first["status"] == "changed", first
    assert first["plan"][0] == f"llama.cpp cpu (node cpu {LLAMA_CPP_PYTHON_VERSION}): cpu (set in the manifest)"
    root = build_dir(first)
    assert root.startswith(f"{BUILDS}/node-{LLAMA_CPP_PYTHON_VERSION}-cpu-"), root
    assert f"build llama.cpp cpu on the node (ggml-rpc-server) -> {root}" in first["changes"]
    assert not any(step.startswith("upload rpc-server") for step in first["plan"])
    node = ssh_nodes.nodes[0]
    record = json.loads(ssh_nodes.exec_in(node, f"cat {root}/build.json").stdout)
    assert (record["backend"], record["binaries"]) == ("cpu", ["rpc-server"])
    assert "-DGGML_NATIVE=ON" in record["cmake_options"]
    assert ssh_nodes.exec_in(node, f"ls {root}/bin").stdout.split() == ["rpc-server"]  # only what the role runs
    (rpc,) = first["services"]
    assert rpc["ready"] and rpc["version"] == ".".join(map(str, RPC_PROTOCOL_VERSION))  # HELLO answered
    exe = ssh_nodes.exec_in(node, f"readlink /proc/{rpc['pid']}/exe").stdout.strip()
    assert exe == f"{root}/bin/rpc-server"


def test_a_second_up_finds_the_build_and_builds_nothing(
    first: dict[str, Any], manifest: Path, ssh_nodes: TestHosts
) -> None:
    root = build_dir(first)
    node = ssh_nodes.nodes[0]
    marker = f"stat -c '%i %Y' {root}/build.json"
    before = ssh_nodes.exec_in(node, marker).stdout
    again = up(manifest)
    assert again["status"] == "unchanged", again
    assert not any(step.startswith("build llama.cpp") for step in again["plan"]), again["plan"]
    assert again["changes"] == []
    assert [s["pid"] for s in again["services"]] == [s["pid"] for s in first["services"]]
    assert ssh_nodes.exec_in(node, marker).stdout == before  # the same marker: nothing was rebuilt


def test_logs_build_shows_the_cmake_output(first: dict[str, Any], manifest: Path) -> None:
    result = invoke("logs", "node1", "build", "-n", "100000", "-f", str(manifest))
    assert result.exit_code == 0, result.stderr
    assert "-- Build files have been written to:" in result.stdout
    assert "ggml-rpc-server" in result.stdout
    assert result.stdout.rstrip().endswith("sollol-build-exit 0")
    data = json.loads(invoke("logs", "node1", "build", "--json", "-n", "3", "-f", str(manifest)).stdout)
    assert (data["role"], data["path"]) == ("build", "$HOME/.sollol/nodebuild/node1/log/build.log")
    assert data["lines"][-1] == "sollol-build-exit 0" and len(data["lines"]) == 3


def test_a_failed_build_fails_its_node_alone(
    ssh_nodes: TestHosts, llama_bins: LlamaCppBinaries, tmp_path: Path
) -> None:
    """node2's build cannot configure (no working C++ compiler: CXX=/bin/false); node1, on the controller's
    build, still comes up, and node2's failure is one line pointing at its build log."""
    roles = {
        "node1": f"rpc: {{port: {PORT + 1}}}",
        "node2": f"rpc: {{port: {PORT + 1}}}\nllama_cpp: {{build: node, build_environment: {{CXX: /bin/false}}}}",
    }
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(ssh_nodes.manifest_yaml(roles, name="nodebuildfail", nodes=ssh_nodes.nodes[:2]))
    try:
        result = invoke("up", str(manifest), "--json")
        assert result.exit_code == 1, result.stdout + result.stderr
        nodes = {n["node"]: n for n in json.loads(result.stdout)["nodes"]}
        assert (nodes["node1"]["status"], [s["ready"] for s in nodes["node1"]["services"]]) == ("changed", [True])
        assert nodes["node2"]["status"] == "failed" and nodes["node2"]["services"] == []
        (failure,) = nodes["node2"]["failures"]
        assert failure.startswith("build llama.cpp: llama.cpp configure failed on the node (exit 1): "), failure
        assert failure.endswith("; see `sollol logs node2 build`") and "\n" not in failure
        log = invoke("logs", "node2", "build", "-n", "100000", "-f", str(manifest)).stdout
        assert "/bin/false" in log and log.rstrip().endswith("sollol-build-exit 1")
        assert f":{PORT + 1}" not in ssh_nodes.exec_in(ssh_nodes.nodes[1], "ss -ltnH").stdout
    finally:
        invoke("down", str(manifest), "-q")


def test_vulkan_headers_too_old_fail_the_node_before_any_build(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    """The node's facts say its Vulkan headers (this machine's, Debian 12's) are too old: the node fails at
    once with what to do, instead of six minutes into a compile."""
    if headers_new_enough(Path("/usr/include")):
        pytest.skip("this machine's Vulkan headers are new enough: the build would run")
    roles = {"node3": f"rpc: {{port: {PORT + 2}}}\nllama_cpp: {{build: node, backend: vulkan}}"}
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(ssh_nodes.manifest_yaml(roles, name="nodebuildvk", nodes=ssh_nodes.nodes[2:3]))
    try:
        result = invoke("up", str(manifest), "--json")
        (node,) = json.loads(result.stdout)["nodes"]
        assert (result.exit_code, node["status"]) == (1, "failed"), result.stdout + result.stderr
        assert node["failures"] == [f"sollol-nodebuildvk-rpc-{PORT + 2}: {OLD_VULKAN_HEADERS}"]
        assert not any(step.startswith("build llama.cpp") for step in node["plan"])
    finally:
        invoke("down", str(manifest), "-q")


def test_two_ups_at_once_build_once(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    """On a fresh node, two `sollol up` processes at once: one takes the node's lock and builds, the other
    waits, then finds the build there and builds nothing."""
    node = ssh_nodes.add_node("buildrace")
    roles = {node.name: f"rpc: {{port: {PORT + 3}}}\nllama_cpp: {BUILD}"}
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(ssh_nodes.manifest_yaml(roles, name="nodebuildrace", nodes=[node]))
    command = [sys.executable, "-m", "sollol_cli", "up", str(manifest), "--json"]
    try:
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
        outputs = [proc.communicate(timeout=900) for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outputs
        runs = [json.loads(out)["nodes"][0] for out, _ in outputs]
        assert sorted(run["status"] for run in runs) == ["changed", "unchanged"], runs
        builds = [step for run in runs for step in run["changes"] if step.startswith("build llama.cpp")]
        assert len(builds) == 1, runs
        listed = ssh_nodes.exec_in(node, f"ls -d {BUILDS}/node-*/build.json").stdout.split()
        assert listed == [f"{build_dir({'plan': builds})}/build.json"]
    finally:
        invoke("down", str(manifest), "-q")
        ssh_nodes.stop_node(node)
