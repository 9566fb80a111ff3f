"""A node's accelerators from the tools it has: pure parsers of nvidia-smi, rocm-smi and vulkaninfo output.

The facts script (facts.py) runs each tool when it is there and prefixes every line it prints with a key, so
one SSH round trip carries them all; the functions here turn those lines into `Accelerator`s. Every parser
takes what a tool printed and returns what it could read, skipping what it could not: a node with an odd
driver shows fewer facts, never a failed `up`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sollol_cli.state import Accelerator

# nvidia-smi's CSV columns, in the order the facts script asks for them
NVIDIA_QUERY = "name,memory.total,memory.free,driver_version"
VULKAN_DEVICE_TYPES = {
    "PHYSICAL_DEVICE_TYPE_DISCRETE_GPU": "gpu",
    "PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU": "integrated",
    "PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU": "virtual",
    "PHYSICAL_DEVICE_TYPE_CPU": "cpu",
    "PHYSICAL_DEVICE_TYPE_OTHER": "other",
}
_MIB = 2**20


def parse_nvidia_smi(lines: Iterable[str]) -> list[Accelerator]:
    """`nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader,nounits`:
    one line per GPU, memory in MiB (`[N/A]` where the driver does not say)."""
    found = []
    for line in lines:
        parts = [part.strip() for part in line.rsplit(",", 3)]  # a name may hold a comma, the numbers never
        if len(parts) != 4 or not parts[0]:
            continue
        name, total, free, driver = parts
        found.append(
            Accelerator(kind="cuda", name=name, memory_total=_mib(total), memory_free=_mib(free), driver=driver)
        )
    return found


def parse_rocm_smi(text: str) -> list[Accelerator]:
    """`rocm-smi --showproductname --showmeminfo vram --json`: `{"card0": {...}, ...}`, memory in bytes as strings.
    Key spelling changed between ROCm releases ("Card series" / "Card Series"), so keys are matched case-blind."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    found = []
    for card in sorted(data, key=_card_order):
        info = data[card]
        if not card.startswith("card") or not isinstance(info, dict):
            continue
        fields = {str(key).lower(): str(value).strip() for key, value in info.items()}
        name = fields.get("card series") or fields.get("card model") or card
        total = _int(fields.get("vram total memory (b)"))
        used = _int(fields.get("vram total used memory (b)"))
        free = total - used if total is not None and used is not None else None
        found.append(Accelerator(kind="rocm", name=name, memory_total=total, memory_free=free, driver="amdgpu"))
    return found


def parse_vulkaninfo_summary(lines: Iterable[str]) -> list[Accelerator]:
    """`vulkaninfo --summary`: the `Devices:` section, one `GPU<n>:` block of `key = value` lines per device.
    The summary has no memory sizes (the rpc-server's device probe has them)."""
    devices: list[dict[str, str]] = []
    in_devices = False
    for raw in lines:
        line = raw.strip()
        if line == "Devices:":
            in_devices = True
        elif not in_devices:
            continue
        elif line.startswith("GPU") and line.endswith(":"):
            devices.append({})
        elif devices and " = " in line:
            key, _, value = line.partition(" = ")
            devices[-1][key.strip()] = value.strip()
    found = []
    for device in devices:
        name = device.get("deviceName")
        if not name:
            continue
        driver = " ".join(filter(None, (device.get("driverName"), device.get("driverInfo"))))
        kind = VULKAN_DEVICE_TYPES.get(device.get("deviceType", ""), "other")
        found.append(Accelerator(kind="vulkan", name=name, driver=driver, device_type=kind))
    return found


def kfd_only() -> Accelerator:
    """An AMD GPU the kernel's compute driver (/dev/kfd) exposes on a node without rocm-smi to describe it."""
    return Accelerator(kind="rocm", name="AMD GPU (/dev/kfd; rocm-smi not installed)", driver="amdgpu")


def _card_order(card: str) -> tuple[int, str]:
    digits = card.removeprefix("card")
    return (int(digits) if digits.isdigit() else 1 << 30, card)


def _mib(value: str) -> int | None:
    number = _int(value)
    return None if number is None else number * _MIB


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None
