"""What sharding reads of the cluster's backends, as data. The runtime's monitor provides it (`Backends`), so
sharding never imports the runtime: the runtime uses sharding, not the reverse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sollol_cli.backends.base import ModelEntry
from sollol_cli.backends.rpc import RpcProbe
from sollol_cli.placement import RpcMemory
from sollol_cli.state import NodeState

GPU_BUILDS = frozenset({"vulkan", "cuda", "rocm"})
CPU_DEVICE = "CPU"  # ggml's name for the CPU device


@dataclass(frozen=True)
class RpcServer:
    """One rpc backend and what its last probe saw (None: never probed)."""

    name: str
    host: str
    port: int
    machine: str  # the CPU devices of rpc-servers on one machine share its RAM
    hint_bytes: int | None = None  # manifest `resources`
    probe: RpcProbe | None = None
    node: str | None = None  # the manifest node it runs on (None: a `backends:` entry)
    device_names: tuple[str, ...] = ()  # the manifest's `rpc.device`, in serving order (empty: its default)
    memory_cap: int | None = None  # manifest `memory_mib`: at most this much of each device is planned for

    @property
    def endpoint(self) -> str:
        """`host:port` as llama-server's `--rpc` takes it and a coordinator record keeps it."""
        return f"{self.host}:{self.port}"

    def speaks(self, protocol: str) -> bool:
        """Whether its last probe saw the rpc protocol version `protocol` ("3.0.0")."""
        return self.probe is not None and ".".join(map(str, self.probe.protocol or ())) == protocol

    def devices(self, node: NodeState | None = None) -> list[ServedDevice]:
        """The devices it serves, each with what its memory is (before any probe: those the manifest names,
        else one, memory unknown); `node`: what `up` recorded of its node (the llama.cpp build there, its RAM)."""
        probed = self.probe.devices if self.probe is not None else ()
        count = len(probed) or len(self.device_names) or 1
        build = node.llama_backend if node is not None else None
        ram = node.mem_total_bytes if node is not None else None
        out = []
        for index in range(count):
            free, total = (probed[index].free, probed[index].total) if index < len(probed) else (None, None)
            if self.memory_cap is not None:  # `memory_mib`: no more than that is planned on it
                free = None if free is None else min(free, self.memory_cap)
                total = None if total is None else min(total, self.memory_cap)
            name = self.device_names[index] if index < len(self.device_names) else None
            label = self.endpoint if count == 1 else f"{self.endpoint}#{index}"
            out.append(ServedDevice(index, label, name, _is_gpu(name, build, total, ram), free, total))
        return out

    def memory(self, node: NodeState | None = None) -> list[RpcMemory]:
        """One entry per device for placement: a GPU device draws on its own memory, a CPU device on the
        machine's RAM (see placement.RpcMemory)."""
        devices = self.devices(node)
        out = []
        for device in devices:
            name = self.name if len(devices) == 1 else f"{self.name}#{device.index}"
            gpu = (device.name or f"#{device.index}") if device.gpu else None
            out.append(RpcMemory(name, self.machine, device.free, self.hint_bytes, self.name, gpu))
        return out


def _is_gpu(name: str | None, build: str | None, total: int | None, ram: int | None) -> bool:
    """A named device is what its name says. An unnamed one is rpc-server's default: every GPU the build
    sees, else the CPU; so a CPU build (or an unknown one) serves the CPU, and a GPU build's device that is
    exactly as large as the node's RAM is the CPU it fell back to (ggml reports the RAM for it)."""
    if name is not None:
        return name.upper() != CPU_DEVICE
    if build not in GPU_BUILDS:
        return False
    return not (total is not None and total == ram)


@dataclass(frozen=True)
class ServedDevice:
    """One device of an rpc-server. The protocol reports memory by index only: the name is the manifest's
    (`rpc.device`), None when rpc-server chose. `label` keys it in the split and the placement: `host:port`
    when the server has one device, `host:port#index` when it has several."""

    index: int
    label: str
    name: str | None
    gpu: bool  # holds its layers in its own memory (VRAM); False: a CPU device, in the machine's RAM
    free: int | None  # bytes, from the last probe
    total: int | None

    @property
    def kind(self) -> str:
        return "gpu" if self.gpu else "cpu"


@dataclass(frozen=True)
class ServingBackend:
    """An Ollama or llama-server backend that answered its last probe, with the models it has."""

    name: str
    node: str | None  # the manifest node it runs on (None: a `backends:` entry)
    machine: str
    hint_bytes: int | None
    models: tuple[ModelEntry, ...]
    kind: str = ""  # ollama | llamacpp


class Backends(Protocol):
    """The cluster's backends as the shard manager needs them (runtime.monitor.Monitor provides this)."""

    def rpc_servers(self) -> list[RpcServer]:
        """Every rpc backend, as last probed."""
        ...

    async def probe_rpc_servers(self) -> list[RpcServer]:
        """Every rpc backend, probed now (rpc-servers a coordinator holds are reported busy, not probed)."""
        ...

    def serving(self) -> list[ServingBackend]:
        """The serving backends that answered their last probe."""
        ...
