"""Accelerator facts: each parser read against a tool's captured output (samples/), then the facts script's
prefixed lines put together. The lavapipe sample is real (`vulkaninfo --summary` on this machine's Mesa); the
nvidia-smi and rocm-smi samples follow those tools' documented formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from sollol_cli.provision.accelerators import parse_nvidia_smi, parse_rocm_smi, parse_vulkaninfo_summary
from sollol_cli.provision.facts import parse_facts
from sollol_cli.state import Accelerator

SAMPLES = Path(__file__).parent / "samples"
GIB = 2**30
MIB = 2**20
LLVMPIPE = Accelerator(
    kind="vulkan",
    name="llvmpipe (LLVM 15.0.6, 256 bits)",
    driver="llvmpipe Mesa 22.3.6 (LLVM 15.0.6)",
    device_type="cpu",
)


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_nvidia_smi_query() -> None:
    assert parse_nvidia_smi(sample("nvidia-smi-query.csv").splitlines()) == [
        Accelerator(kind="cuda", name="NVIDIA GeForce RTX 3090", memory_total=24 * GIB, memory_free=23893 * MIB, driver="550.54.14"),
        Accelerator(kind="cuda", name="NVIDIA GeForce RTX 3060", memory_total=12 * GIB, memory_free=11950 * MIB, driver="550.54.14"),
        Accelerator(kind="cuda", name="Tesla K80", driver="470.256.02"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        pytest.param([], [], id="no-output"),
        pytest.param(["", "garbage"], [], id="not-csv"),
        pytest.param(["Quadro, P4000, 8192, 8000, 535.1"], [("Quadro, P4000", 8 * GIB)], id="comma-in-name"),
        pytest.param(
            ["NVIDIA A100, 81920, [Not Supported], 535.1"], [("NVIDIA A100", 80 * GIB)], id="free-not-supported"
        ),
    ],
)
def test_nvidia_smi_odd_lines(lines: list[str], expected: list[tuple[str, int]]) -> None:
    assert [(a.name, a.memory_total) for a in parse_nvidia_smi(lines)] == expected


def test_rocm_smi_json() -> None:
    assert parse_rocm_smi(sample("rocm-smi-productname-vram.json")) == [
        Accelerator(kind="rocm", name="Navi 31 [Radeon RX 7900 XTX]", memory_total=25753026560, memory_free=25753026560 - GIB, driver="amdgpu"),
        Accelerator(kind="rocm", name="Radeon RX 6800", memory_total=17163091968, memory_free=17163091968 - 12345, driver="amdgpu"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("WARNING: AMD GPU device(s) is/are in a low-power state", id="not-json"),
        pytest.param("[1, 2]", id="not-an-object"),
        pytest.param('{"system": {"Driver version": "6.8.5"}}', id="no-cards"),
    ],
)
def test_rocm_smi_unreadable(text: str) -> None:
    assert parse_rocm_smi(text) == []


def test_vulkaninfo_summary_lavapipe() -> None:
    assert parse_vulkaninfo_summary(sample("vulkaninfo-summary-lavapipe.txt").splitlines()) == [LLVMPIPE]


def test_vulkaninfo_summary_two_devices() -> None:
    text = """Devices:
========
GPU0:
\tapiVersion         = 1.3.277
\tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
\tdeviceName         = AMD Radeon RX 7900 XTX (RADV NAVI31)
\tdriverName         = radv
\tdriverInfo         = Mesa 24.0.5
GPU1:
\tdeviceType         = PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU
\tdeviceName         = Intel(R) UHD Graphics 770 (ADL-S GT1)
\tdriverName         = Intel open-source Mesa driver
"""
    assert parse_vulkaninfo_summary(text.splitlines()) == [
        Accelerator(kind="vulkan", name="AMD Radeon RX 7900 XTX (RADV NAVI31)", driver="radv Mesa 24.0.5"),
        Accelerator(
            kind="vulkan", name="Intel(R) UHD Graphics 770 (ADL-S GT1)", driver="Intel open-source Mesa driver",
            device_type="integrated",
        ),
    ]  # fmt: skip


def test_vulkaninfo_without_devices() -> None:
    """No driver installed: vulkaninfo prints an error and no Devices section."""
    assert parse_vulkaninfo_summary(["ERROR: [Loader Message] Code 0 : vkCreateInstance: Found no drivers!"]) == []


def prefixed(key: str, text: str) -> list[str]:
    return [f"{key}={line}" for line in text.splitlines()]


def test_facts_lines_make_accelerators() -> None:
    """What the facts script prints on a node with all three tools, a render node and a Vulkan loader."""
    lines = [
        *prefixed("nvidia", sample("nvidia-smi-query.csv")),
        "rocm=" + sample("rocm-smi-productname-vram.json").strip(),
        "kfd=1",
        "dri=renderD128 amdgpu",
        "dri=renderD129 ",
        *prefixed("vk", sample("vulkaninfo-summary-lavapipe.txt")),
        "vulkan_loader=/lib/x86_64-linux-gnu/libvulkan.so.1",
    ]
    facts = parse_facts("\n".join(lines))
    assert [(a.kind, a.name) for a in facts.accelerators] == [
        ("cuda", "NVIDIA GeForce RTX 3090"),
        ("cuda", "NVIDIA GeForce RTX 3060"),
        ("cuda", "Tesla K80"),
        ("rocm", "Navi 31 [Radeon RX 7900 XTX]"),
        ("rocm", "Radeon RX 6800"),
        ("vulkan", "llvmpipe (LLVM 15.0.6, 256 bits)"),
    ]
    assert facts.render_nodes == ("renderD128 (amdgpu)", "renderD129")
    assert facts.vulkan_loader == "/lib/x86_64-linux-gnu/libvulkan.so.1"


def test_facts_kfd_without_rocm_smi() -> None:
    facts = parse_facts("kfd=1\nrocm=\n")
    assert [(a.kind, a.driver) for a in facts.accelerators] == [("rocm", "amdgpu")]


def test_facts_without_accelerators() -> None:
    facts = parse_facts("os=Linux\nrocm=\n")
    assert (facts.accelerators, facts.render_nodes, facts.vulkan_loader) == ((), (), None)
