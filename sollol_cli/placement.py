"""Pure hybrid decision per model: distribute whole copies when one node can hold the model, shard it over
rpc backends when none can, and say why in a sentence (`sollol run -v`, `sollol status`).

Memory rules: a measured free-memory figure beats the manifest's hint; rpc-servers on one machine share its
memory, so a machine counts once (its largest figure), never once per rpc-server.
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
    """Memory an rpc-server can hold tensors in; `node` is the rpc backend's name."""


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
    """The rpc backends together, each machine counted once."""

    names: list[str]
    machines: int
    total_bytes: int
    unknown: list[str]  # rpc backends whose machine has no figure at all

    def describe(self) -> str:
        count = len(self.names)
        if count == 0:
            return "there are no rpc backends"
        if count == 1:
            text = f"1 rpc backend has {gib(self.total_bytes)}"
        else:
            on = f" on {_plural(self.machines, 'machine')}" if self.machines < count else ""
            text = f"{count} rpc backends{on} have {gib(self.total_bytes)} together"
        if self.unknown:
            text += f" (memory of {', '.join(self.unknown)} unknown)"
        return text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def machine_bytes(members: Sequence[NodeMemory]) -> int | None:
    """One machine's memory from the figures its rpc-servers report: measured beats hints, and the largest
    figure is taken because they all describe the same memory."""
    measured = [m.free_bytes for m in members if m.free_bytes is not None]
    if measured:
        return max(measured)
    hints = [m.hint_bytes for m in members if m.hint_bytes is not None]
    return max(hints) if hints else None


def _by_machine(rpc_backends: Sequence[NodeMemory]) -> dict[str, list[NodeMemory]]:
    machines: dict[str, list[NodeMemory]] = {}
    for rpc in rpc_backends:
        machines.setdefault(rpc.machine_id, []).append(rpc)
    return machines


def rpc_pool(rpc_backends: Sequence[NodeMemory]) -> RpcPool:
    machines = _by_machine(rpc_backends)
    total = 0
    unknown: list[str] = []
    for members in machines.values():
        value = machine_bytes(members)
        if value is None:
            unknown.extend(m.node for m in members)
        else:
            total += value
    return RpcPool([r.node for r in rpc_backends], len(machines), total, unknown)


def split_for(rpc_backends: Sequence[NodeMemory], override: Sequence[float] | None = None) -> list[float]:
    """Tensor split (shares summing to 1, in the given order) for llama-server `--tensor-split`.

    Shares follow memory; rpc-servers on one machine split that machine's memory evenly. A backend with no
    figure gets the average of the others (an even split when nothing is known). A manifest `tensor_split`
    wins, scaled to sum 1.
    """
    if not rpc_backends:
        return []
    if override is not None:
        if len(override) != len(rpc_backends):
            raise UsageError(
                f"tensor_split has {len(override)} shares but the model is sharded over {len(rpc_backends)} "
                "rpc backends; give one share per rpc backend"
            )
        if any(s < 0 for s in override) or sum(override) <= 0:
            raise UsageError("tensor_split needs non-negative shares with a positive sum")
        weights = [float(s) for s in override]
    else:
        machines = _by_machine(rpc_backends)
        per_backend: list[float | None] = []
        for rpc in rpc_backends:
            members = machines[rpc.machine_id]
            value = machine_bytes(members)
            per_backend.append(None if value is None else value / len(members))
        known = [v for v in per_backend if v is not None and v > 0]
        average = sum(known) / len(known) if known else 1.0
        weights = [average if v is None else v for v in per_backend]
        if sum(weights) <= 0:  # every figure is zero: nothing to prefer
            weights = [1.0] * len(weights)
    total = sum(weights)
    return [w / total for w in weights]
