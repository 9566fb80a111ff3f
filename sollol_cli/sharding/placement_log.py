"""Where llama-server put a sharded model (pure): layers from llama.cpp's own split rule, MiB from its log.

Lines of interest (llama.cpp 0c1e57098, `-lv 4` and up):
    load_tensors: RPC0[127.0.0.1:50052] model buffer size =    20.01 MiB
    load_tensors: RPC1[127.0.0.1:50052] model buffer size =    12.50 MiB
    llama_kv_cache: RPC0[127.0.0.1:50053] KV buffer size =     6.00 MiB
    load_tensors: layer   5 assigned to device RPC1, is_swa = 0
A buffer's label is `RPC<i>[host:port]` with `i` the device's index on that rpc-server (an rpc-server serving
`-d Vulkan0,CPU` has RPC0 and RPC1), so buffers are keyed `host:port#i`. A layer line names the device as
the process numbered them all (RPC0, RPC1, ... over every --rpc endpoint's devices in order) and is keyed by
that name.
Per-layer lines need `-lv 5`, which also logs ~10 lines per generated token; a long-lived coordinator
cannot afford that, so sollol passes an explicit `-ts` and computes the layers with `assign_layers`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

_BUFFER = re.compile(
    r"(?P<dev>[A-Za-z_]+\d*)(?:\[(?P<ep>[^\]]+)\])?\s+(?P<what>model|KV|compute) buffer size\s*=\s*(?P<mib>[\d.]+) MiB"
)
_LAYER = re.compile(r"layer\s+(?P<layer>\d+) assigned to device (?P<dev>[A-Za-z_]+\d*)(?:\[(?P<ep>[^\]]+)\])?")


@dataclass
class DevicePlacement:
    device: str  # host:port#index for an rpc-server's device, else the device name (CPU, CUDA0, RPC3, ...)
    layers: list[int] = field(default_factory=list)
    model_mib: float = 0.0
    kv_mib: float = 0.0

    @property
    def layer_range(self) -> str:
        if not self.layers:
            return "-"
        ordered = sorted(self.layers)
        return (
            f"{ordered[0]}-{ordered[-1]}"
            if ordered[-1] - ordered[0] + 1 == len(ordered)
            else ",".join(map(str, ordered))
        )


def assign_layers(n_layer: int, split: list[float] | tuple[float, ...]) -> list[int]:
    """Device index of each offloaded layer 0..n_layer (the last one is the output layer), as llama.cpp's
    load_tensors assigns them with all layers offloaded: cumulative split points, then `upper_bound`."""
    total = sum(split)
    points, running = [], 0.0
    for share in split:
        running += share
        points.append(running / total)
    layers = n_layer + 1
    return [min(bisect.bisect_right(points, il / layers), len(split) - 1) for il in range(layers)]


def layers_by_device(
    n_layer: int, devices: list[str] | tuple[str, ...], split: list[float] | tuple[float, ...]
) -> dict[str, list[int]]:
    """The layers of each device (`devices` in -ts order, one share each in `split`)."""
    out: dict[str, list[int]] = {device: [] for device in devices}
    for layer, device in enumerate(assign_layers(n_layer, split)):
        out[devices[device]].append(layer)
    return out


def parse_placement(log: str) -> dict[str, DevicePlacement]:
    out: dict[str, DevicePlacement] = {}

    def key(dev: str, endpoint: str | None) -> str:
        index = dev[3:] if dev.startswith("RPC") else ""
        return f"{endpoint}#{index}" if endpoint and index.isdigit() else endpoint or dev

    # llama.cpp may do a dry "fit" pass with 0.00 MiB buffers first: only the last load counts
    if "load_tensors: loading model tensors" in log:
        log = log.rsplit("load_tensors: loading model tensors", 1)[-1]
    for line in log.splitlines():
        if match := _BUFFER.search(line):
            where = key(match["dev"], match["ep"])
            entry = out.setdefault(where, DevicePlacement(where))
            if match["what"] == "model":
                entry.model_mib += float(match["mib"])
            elif match["what"] == "KV":
                entry.kv_mib += float(match["mib"])
        elif match := _LAYER.search(line):
            where = key(match["dev"], match["ep"])
            entry = out.setdefault(where, DevicePlacement(where))
            layer = int(match["layer"])
            if layer not in entry.layers:
                entry.layers.append(layer)
    return out
