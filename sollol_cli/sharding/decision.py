"""The hybrid decision for one model, as a pure function: distribute it (whole, on a node that has it) or
shard it over the rpc backends, and why in one sentence (`sollol run -v`, `sollol status`)."""

from __future__ import annotations

from collections.abc import Sequence

from sollol_cli.manifest.models import Model, ModelMode
from sollol_cli.names import normalize_model_name
from sollol_cli.placement import ModelSize, NodeMemory, Placement, RpcMemory, decide_mode, estimate_overhead_bytes
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.pool import GPU_BUILDS, RpcServer, ServingBackend
from sollol_cli.state import ClusterState, NodeState

# Ollama runs a model on NVIDIA and AMD GPUs when it finds them (its Vulkan support is opt-in)
OLLAMA_GPU_KINDS = frozenset({"cuda", "rocm"})

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
    nodes, rpcs = node_memory(name, serving, state), rpc_memory(rpc_servers, state)
    decision = decide_mode(name, size, model.mode, nodes, rpcs)
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
    """The backends that have the model, with the free memory `up` measured on their node (see
    `serving_free_bytes`)."""
    key = normalize_model_name(name)
    out = []
    for backend in serving:
        if not any(normalize_model_name(m.name) == key for m in backend.models):
            continue
        node = state.nodes.get(backend.node or "")
        free = serving_free_bytes(backend.kind, node) if node else None
        out.append(NodeMemory(backend.name, backend.machine, free, backend.hint_bytes))
    return out


def serving_free_bytes(kind: str, node: NodeState) -> int | None:
    """What a backend serving a whole model can hold it in: a llama-server of a GPU build (and Ollama on a
    node with NVIDIA or AMD GPUs) puts the layers in the GPUs' memory, so their free VRAM together (the
    accelerator facts `up` read; None when the tool reports no memory, as vulkaninfo does); a CPU build the
    node's free RAM. A CPU-type Vulkan device (lavapipe) is no GPU."""
    gpu_kinds = {"llamacpp": {node.llama_backend} & GPU_BUILDS, "ollama": OLLAMA_GPU_KINDS}.get(kind, set())
    gpus = [a for a in node.accelerators if a.kind in gpu_kinds and a.device_type != "cpu"]
    if not gpus:
        return node.mem_available_bytes
    known = [a.memory_free for a in gpus if a.memory_free is not None]
    return sum(known) if known else None


def rpc_memory(rpc_servers: Sequence[RpcServer], state: ClusterState) -> list[RpcMemory]:
    """The devices of the rpc backends a coordinator could use (all but the ones the last probe found down),
    one entry each (`RpcServer.memory`)."""
    up = [s for s in rpc_servers if s.probe is None or s.probe.state != "down"]
    return [device for s in up for device in s.memory(state.nodes.get(s.node or ""))]
