"""The Vulkan build for real, on Mesa's lavapipe (a Vulkan device on the CPU; facts: shared/reference/
gpu-builds.md): cached under its own backend key, dynamically linked to the node's libvulkan.so.1; its
rpc-server serves the llvmpipe device (banner and the protocol's device memory agree); the static CPU
llama-server drives it over RPC 7.0.0 with every layer on it and generates tokens.

Marked `vulkan` as well as `real`: the first run builds the Vulkan binaries (~13 min on 2 cores) and needs
glslc, libvulkan-dev, spirv-headers and mesa-vulkan-drivers, which `.ci/run` installs and builds; the
README's test command runs them, the default `pytest` run leaves them out.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.backends.rpc import parse_banner_devices, probe_rpc
from sollol_cli.llamacpp.build import LlamaCppBinaries, find_build, install_dir
from sollol_cli.llamacpp.sdist import LLAMA_CPP_PYTHON_VERSION
from sollol_cli.settings import Settings
from tests.harness.llama import ServerGroup, ServerProcess, start_rpc_server
from tests.real.test_llamacpp_build import elf_facts

pytestmark = [pytest.mark.real, pytest.mark.vulkan]


@pytest.fixture
def vulkan_rpc(
    vulkan_bins: LlamaCppBinaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    # ggml skips CPU-type Vulkan devices (lavapipe) unless they are named
    monkeypatch.setenv("GGML_VK_VISIBLE_DEVICES", "0")
    # the banner goes to stdout, block-buffered into a file: line-buffer it (the Vulkan build is dynamically
    # linked, so stdbuf's preload works) so the log has it while the server runs
    wrapper = tmp_path / "rpc-server"
    wrapper.write_text(f'#!/bin/sh\nexec stdbuf -oL {vulkan_bins.rpc_server} "$@"\n')
    wrapper.chmod(0o755)
    server = start_rpc_server(wrapper, tmp_path / "vulkan-rpc.log", timeout=60)
    yield server
    server.stop()


def test_vulkan_build_is_cached_by_backend_and_loads_libvulkan(vulkan_bins: LlamaCppBinaries) -> None:
    root = install_dir(Settings().cache_dir, "vulkan")
    assert root.name == f"{LLAMA_CPP_PYTHON_VERSION}-vulkan"
    assert (vulkan_bins.rpc_server, vulkan_bins.backend) == (root / "bin" / "rpc-server", "vulkan")
    assert find_build(Settings().cache_dir, "vulkan") == vulkan_bins
    record = json.loads((root / "build.json").read_text())
    assert record["backend"] == "vulkan"
    assert "-DGGML_VULKAN=ON" in record["cmake_options"]
    assert "-DCMAKE_EXE_LINKER_FLAGS=-static" not in record["cmake_options"]
    for path in (vulkan_bins.rpc_server, vulkan_bins.llama_server):
        has_interpreter, _ = elf_facts(path)
        assert has_interpreter, f"{path} should be dynamically linked"
        assert b"libvulkan.so.1" in path.read_bytes()


async def test_rpc_server_serves_the_llvmpipe_device(vulkan_rpc: ServerProcess) -> None:
    probe = await probe_rpc(vulkan_rpc.host, vulkan_rpc.port)
    assert (probe.state, probe.protocol) == ("ready", (7, 0, 0)), probe
    banner = vulkan_rpc.log_tail(20000)
    devices = parse_banner_devices(banner)
    assert [(d.name, d.description.split(" (")[0]) for d in devices] == [("Vulkan0", "llvmpipe")], banner
    # the protocol's GET_DEVICE_MEMORY says what the banner says, device by device
    assert [device.total for device in probe.devices] == [devices[0].total]


def test_cpu_coordinator_drives_the_vulkan_rpc_server(
    vulkan_rpc: ServerProcess, llama_servers: ServerGroup, tiny_gguf: Path
) -> None:
    coordinator = llama_servers.llama_server(tiny_gguf, rpc=[vulkan_rpc.endpoint], extra=["-lv", "4"], timeout=300)
    body = json.dumps({"prompt": "Hello", "n_predict": 8, "temperature": 0, "top_k": 1, "seed": 1}).encode()
    request = urllib.request.Request(
        f"{coordinator.url}/completion", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        answer = json.loads(response.read())
    assert answer["tokens_predicted"] == 8, answer
    log = coordinator.log_tail(200000)
    # every repeating layer went to the Vulkan rpc-server (the label is RPC<index>[host:port])
    assert re.search(r"offloaded (\d+)/\1 layers to GPU", log), log[-3000:]
    assert re.search(rf"RPC0\[{re.escape(vulkan_rpc.endpoint)}\] model buffer size = +[\d.]+ MiB", log), log[-3000:]
