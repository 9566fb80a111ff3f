"""Pure hybrid decision per model: distribute whole copies when one node can hold the model, shard it over
rpc backends when none can, and say why in a sentence (`sollol run -v`, `sollol status`).

Memory rules: a measured free-memory figure beats the manifest's hint. Memory is counted per device: an
rpc-server may serve several (`rpc.device: [CUDA0, CPU]`), and llama-server gives each its own share of the
layers. A GPU device holds its layers in its own memory (VRAM), so each GPU counts; CPU devices of one machine
hold theirs in the machine's RAM, so a machine's CPU devices count once (their largest figure), never once per
rpc-server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sollol_cli.errors import UsageError
from sollol_cli.manifest.models import ModelMode

GIB = 1024**3
# llama.cpp's compute buffers and runtime need room beyond weights and KV cache; a fixed floor covers small
# models, the proportional part the larger graphs of big ones.
OVERHEAD_FLOOR_BYTES = 512 * 1024**2
OVERHEAD_FRACTION = 0.05


def estimate_overhead_bytes(weights_bytes: int) -> int:
    return OVERHEAD_FLOOR_BYTES + int(weights_bytes * OVERHEAD_FRACTION)


@dataclass(frozen=True)
class ModelSize:
    """Memory one running copy needs; the KV cache is for the context the model is run with."""

    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.overhead_bytes


@dataclass(frozen=True)
class NodeMemory:
    """Memory of a node that could run the whole model (Ollama or llama-server)."""

    node: str
    machine_id: str
    free_bytes: int | None = None  # measured
    hint_bytes: int | None = None  # manifest `resources`

    @property
    def usable_bytes(self) -> int | None:
        return self.free_bytes if self.free_bytes is not None else self.hint_bytes

    def describe(self) -> str:
        usable = self.usable_bytes
        if usable is None:
            return f"{self.node} (memory unknown)"
        how = "free" if self.free_bytes is not None else "per manifest hint"
        return f"{self.node} ({gib(usable)} {how})"


@dataclass(frozen=True)
class RpcMemory(NodeMemory):
    """Memory one device of an rpc-server can hold tensors in. `node` names the device (the rpc backend's name
    when it serves one device), `backend` the rpc backend it belongs to (empty: `node`). `gpu` is the device's
    own memory (e.g. `Vulkan0`, or its index when unnamed) on machine `machine_id`: devices naming the same GPU
    of a machine share it; None is a CPU device, which shares the machine's RAM with the machine's other CPU
    devices."""

    backend: str = ""
    gpu: str | None = None

    @property
    def backend_name(self) -> str:
        return self.backend or self.node

    @property
    def memory_key(self) -> tuple[str, str | None]:
        """Which memory it draws on: devices with one key share one figure."""
        return (self.machine_id, self.gpu)


class Placement(StrEnum):
    distribute = "distribute"
    shard = "shard"
    none = "none"


@dataclass(frozen=True)
class ModeDecision:
    """`fits_on`: for distribute the nodes that hold the whole model (most memory first); for shard the rpc
    backends it is spread over; empty when it cannot run."""

    mode: Placement
    reason: str
    fits_on: list[str]


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.1f} GiB"


def decide_mode(
    model_name: str,
    size: ModelSize,
    manifest_mode: ModelMode,
    nodes_with_model: Sequence[NodeMemory],
    rpc_backends: Sequence[RpcMemory],
) -> ModeDecision:
    need = size.total_bytes
    needs = f"needs {gib(need)}"
    fitting = sorted(
        (n for n in nodes_with_model if (n.usable_bytes or 0) >= need),
        key=lambda n: (-(n.usable_bytes or 0), n.node),
    )
    unknown = [n for n in nodes_with_model if n.usable_bytes is None]
    pool = rpc_pool(rpc_backends)

    if manifest_mode is ModelMode.distribute:
        return _forced_distribute(model_name, needs, fitting, unknown, nodes_with_model)
    if manifest_mode is ModelMode.shard:
        head = f"shard (set in the manifest): {needs}"
        if not pool.names:
            return ModeDecision(Placement.shard, f"{head}, but there are no rpc backends to shard over", [])
        short = pool.total_bytes < need and not pool.unknown
        warning = "; that is less than it needs, loading may fail" if short else ""
        return ModeDecision(Placement.shard, f"{head}; {pool.describe()}{warning}", pool.names)

    if fitting:
        where = ", ".join(n.describe() for n in fitting)
        return ModeDecision(Placement.distribute, f"distribute: {needs}, fits on {where}", _names(fitting))
    if unknown:
        where = ", ".join(n.node for n in unknown)
        return ModeDecision(
            Placement.distribute,
            f"distribute: {needs}; memory of {where} is unknown, assuming it fits",
            _names(unknown),
        )
    largest = _largest(nodes_with_model, model_name)
    if pool.names and (pool.total_bytes >= need or pool.unknown):
        assumption = "" if pool.total_bytes >= need else ", assuming the unknown memory makes up the rest"
        return ModeDecision(Placement.shard, f"shard: {needs}, {largest}; {pool.describe()}{assumption}", pool.names)
    return ModeDecision(Placement.none, f"cannot run: {needs}, {largest}; {pool.describe()}", [])


def _forced_distribute(
    model_name: str,
    needs: str,
    fitting: list[NodeMemory],
    unknown: list[NodeMemory],
    nodes_with_model: Sequence[NodeMemory],
) -> ModeDecision:
    head = f"distribute (set in the manifest): {needs}"
    if fitting:
        return ModeDecision(
            Placement.distribute, f"{head}, fits on {', '.join(n.describe() for n in fitting)}", _names(fitting)
        )
    if not nodes_with_model:
        return ModeDecision(Placement.distribute, f"{head}, but no node has '{model_name}'", [])
    if unknown:
        where = ", ".join(n.node for n in unknown)
        return ModeDecision(Placement.distribute, f"{head}; memory of {where} is unknown", _names(unknown))
    return ModeDecision(
        Placement.distribute,
        f"{head}, but {_largest(nodes_with_model, model_name)}; it may fail to load or run slowly",
        [],
    )


def _names(nodes: Sequence[NodeMemory]) -> list[str]:
    return [n.node for n in nodes]


def _largest(nodes: Sequence[NodeMemory], model_name: str) -> str:
    known = [n for n in nodes if n.usable_bytes is not None]
    if not known:
        return f"no node serves '{model_name}' whole"
    top = max(known, key=lambda n: (n.usable_bytes or 0, n.node))
    return f"largest node has {gib(top.usable_bytes or 0)} ({top.node})"


@dataclass(frozen=True)
class RpcPool:
    """The rpc backends together, each memory (a machine's RAM, a GPU's VRAM) counted once."""

    names: list[str]  # rpc backends, in order
    machines: int
    total_bytes: int
    unknown: list[str]  # devices whose memory has no figure at all
    devices: int = 0  # devices the rpc backends serve (0: one each)

    def describe(self) -> str:
        count = len(self.names)
        if count == 0:
            return "there are no rpc backends"
        served = f" with {self.devices} devices" if self.devices > count else ""
        if count == 1:
            text = f"1 rpc backend{served} has {gib(self.total_bytes)}"
        else:
            on = f" on {_plural(self.machines, 'machine')}" if self.machines < count else ""
            text = f"{count} rpc backends{served}{on} have {gib(self.total_bytes)} together"
        if self.unknown:
            text += f" (memory of {', '.join(self.unknown)} unknown)"
        return text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def machine_bytes(members: Sequence[NodeMemory]) -> int | None:
    """One memory's size from the figures its devices report (a machine's CPU devices, or the devices naming
    one GPU): measured beats hints, and the largest figure is taken because they all describe the same memory."""
    measured = [m.free_bytes for m in members if m.free_bytes is not None]
    if measured:
        return max(measured)
    hints = [m.hint_bytes for m in members if m.hint_bytes is not None]
    return max(hints) if hints else None


def _by_memory(rpc_devices: Sequence[RpcMemory]) -> dict[tuple[str, str | None], list[RpcMemory]]:
    memories: dict[tuple[str, str | None], list[RpcMemory]] = {}
    for device in rpc_devices:
        memories.setdefault(device.memory_key, []).append(device)
    return memories


def _backend_names(rpc_devices: Sequence[RpcMemory]) -> list[str]:
    return list(dict.fromkeys(d.backend_name for d in rpc_devices))


def rpc_pool(rpc_devices: Sequence[RpcMemory]) -> RpcPool:
    """The devices of the rpc backends (one entry per device, see `RpcMemory`) as one pool."""
    memories = _by_memory(rpc_devices)
    total = 0
    unknown: list[str] = []
    for members in memories.values():
        value = machine_bytes(members)
        if value is None:
            unknown.extend(m.node for m in members)
        else:
            total += value
    names = _backend_names(rpc_devices)
    machines = len({d.machine_id for d in rpc_devices})
    return RpcPool(names, machines, total, unknown, len(rpc_devices) if len(rpc_devices) > len(names) else 0)


def device_bytes(rpc_devices: Sequence[RpcMemory]) -> list[float | None]:
    """Memory each device can give a model, in order: a GPU its own, CPU devices of one machine that
    machine's figure shared evenly; None where nothing is known."""
    memories = _by_memory(rpc_devices)
    out: list[float | None] = []
    for device in rpc_devices:
        members = memories[device.memory_key]
        value = machine_bytes(members)
        out.append(None if value is None else value / len(members))
    return out


def split_for(rpc_devices: Sequence[RpcMemory], override: Sequence[float] | None = None) -> list[float]:
    """Tensor split (shares summing to 1, in the given order) for llama-server `--tensor-split`, which takes
    one share per device: an rpc-server serving several devices has one entry per device here.

    Shares follow memory: a GPU device's own, while the CPU devices of one machine split that machine's memory
    evenly. A device with no figure gets the average of the others (an even split when nothing is known). A
    manifest `tensor_split` wins, scaled to sum 1.
    """
    if not rpc_devices:
        return []
    if override is not None:
        if len(override) != len(rpc_devices):
            backends = len(_backend_names(rpc_devices))
            over, per = f"{backends} rpc backends", "rpc backend"
            if backends != len(rpc_devices):
                over, per = f"{len(rpc_devices)} devices of {_plural(backends, 'rpc backend')}", "device"
            raise UsageError(
                f"tensor_split has {len(override)} shares but the model is sharded over {over}; "
                f"give one share per {per}"
            )
        if any(s < 0 for s in override) or sum(override) <= 0:
            raise UsageError("tensor_split needs non-negative shares with a positive sum")
        weights = [float(s) for s in override]
    else:
        per_backend = device_bytes(rpc_devices)
        known = [v for v in per_backend if v is not None and v > 0]
        average = sum(known) / len(known) if known else 1.0
        weights = [average if v is None else v for v in per_backend]
        if sum(weights) <= 0:  # every figure is zero: nothing to prefer
            weights = [1.0] * len(weights)
    total = sum(weights)
    return [w / total for w in weights]
