"""The hybrid decision for one model, as a pure function: distribute it (whole, on a node that has it) or
shard it over the rpc backends, and why in one sentence (`sollol run -v`, `sollol status`)."""

from __future__ import annotations

from collections.abc import Sequence

from sollol_cli.manifest.models import Model, ModelMode
from sollol_cli.names import normalize_model_name
from sollol_cli.placement import ModelSize, NodeMemory, Placement, RpcMemory, decide_mode, estimate_overhead_bytes
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.pool import RpcServer, ServingBackend
from sollol_cli.state import ClusterState

NOT_IN_MANIFEST = "distribute: not a manifest model, served by the nodes that have it"
SET_TO_DISTRIBUTE = "distribute (set in the manifest)"
SIZE_UNKNOWN = "distribute: model size unknown (no GGUF found, no node reports it)"


def decide(
    name: str,
    model: Model | None,
    file: ModelFile | None,
    serving: Sequence[ServingBackend],
    rpc_servers: Sequence[RpcServer],
    state: ClusterState,
) -> tuple[bool, str]:
    """(shard?, why). `file` is the model's GGUF when found; without it the size a node reports is used."""
    if model is None:
        return False, NOT_IN_MANIFEST
    if model.mode is ModelMode.distribute:
        return False, SET_TO_DISTRIBUTE
    weights = file.size if file else reported_size(name, serving)
    if weights is None and model.mode is ModelMode.auto:
        return False, SIZE_UNKNOWN
    size = ModelSize(weights or 0, (file.kv_bytes if file else None) or 0, estimate_overhead_bytes(weights or 0))
    decision = decide_mode(name, size, model.mode, node_memory(name, serving, state), rpc_memory(rpc_servers))
    return decision.mode is Placement.shard, decision.reason


def reported_size(name: str, serving: Sequence[ServingBackend]) -> int | None:
    """The model's size as the first backend that lists it reports it."""
    key = normalize_model_name(name)
    for backend in serving:
        for entry in backend.models:
            if normalize_model_name(entry.name) == key and entry.size:
                return entry.size
    return None


def node_memory(name: str, serving: Sequence[ServingBackend], state: ClusterState) -> list[NodeMemory]:
    """The backends that have the model, with the free memory `up` measured on their node."""
    key = normalize_model_name(name)
    out = []
    for backend in serving:
        if not any(normalize_model_name(m.name) == key for m in backend.models):
            continue
        node = state.nodes.get(backend.node or "")
        free = node.mem_available_bytes if node else None
        out.append(NodeMemory(backend.name, backend.machine, free, backend.hint_bytes))
    return out


def rpc_memory(rpc_servers: Sequence[RpcServer]) -> list[RpcMemory]:
    """The rpc backends a coordinator could use: all but the ones the last probe found down."""
    up = [s for s in rpc_servers if s.probe is None or s.probe.state != "down"]
    return [RpcMemory(s.name, s.machine, s.free_bytes, s.hint_bytes) for s in up]
