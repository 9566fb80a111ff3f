"""Which rpc backends a coordinator uses and how the layers are split over them, from a fresh probe of
each (pure: the shard manager probes, this decides)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sollol_cli.errors import BackendError, NoHealthyBackend, NotEnoughMemory
from sollol_cli.manifest.models import Model, SplitBy
from sollol_cli.placement import RpcMemory, machine_bytes, split_for
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.layer_split import BackendSpeed, expected_tokens_per_s, split_by_speed
from sollol_cli.sharding.placement_log import assign_layers
from sollol_cli.sharding.pool import RpcServer


@dataclass(frozen=True)
class RpcChoice:
    endpoints: tuple[str, ...]  # in layer order
    split: tuple[float, ...]  # one share per endpoint (llama-server -ts)
    memory: dict[str, list[int]]  # endpoint -> [free, total] bytes when planned (shown while it holds them)
    split_by: str = "memory"  # memory | speed | manifest
    expected_tokens_per_s: float | None = None  # from the split and the backends' measured speeds
    speeds: dict[str, float] = field(default_factory=dict)  # endpoint -> measured bytes/s, of those used


def choose_rpc_servers(
    model: Model,
    file: ModelFile,
    servers: Sequence[RpcServer],
    protocol: str,
    speeds: Mapping[str, float] | None = None,
) -> RpcChoice:
    """The ready rpc backends that speak `protocol`; refuses when none is ready, when one speaks another
    protocol, or when some are missing and the ready ones cannot hold the model.

    The split: a manifest `tensor_split` wins; else, unless the model says `split_by: memory`, by measured
    speed (`speeds`: endpoint -> bytes of layer weights per second, see layer_split.py), which may leave out
    backends the faster ones make unnecessary; else, and when the speeds do not decide, by memory."""
    ready, unusable = [], []
    for server in servers:
        probe = server.probe
        if probe is None or probe.state != "ready":
            state = "busy (another coordinator is attached)" if probe and probe.state == "busy" else "down"
            unusable.append(f"{server.name} ({server.endpoint}) is {state}")
            continue
        version = ".".join(map(str, probe.protocol)) if probe.protocol else "?"
        if version != protocol:
            raise BackendError(
                f"rpc backend {server.name} ({server.endpoint}) speaks protocol {version}, "
                f"the coordinator's llama.cpp speaks {protocol}",
                hint="run the same llama.cpp build on every node (sollol up uploads it)",
            )
        ready.append(server)
    if not ready:
        why = "; ".join(unusable) or "none configured"
        raise NoHealthyBackend(f"model '{model.name}' needs sharding but no rpc backend is ready: {why}")
    need = file.size + (file.kv_bytes or 0)
    have = pool_bytes(ready)
    if unusable and have is not None and have < need:
        raise NotEnoughMemory(
            f"model '{model.name}' needs {need / 2**30:.1f} GiB but the ready rpc backends have "
            f"{have / 2**30:.1f} GiB; missing: {'; '.join(unusable)}"
        )
    memory = [RpcMemory(s.name, s.machine, s.free_bytes) for s in ready]
    override = model.tensor_split if model.tensor_split and len(model.tensor_split) == len(ready) else None
    # Always an explicit split: llama.cpp's default follows free memory at load time, which would make
    # the layer placement unpredictable; with -ts it is computed exactly (placement_log.assign_layers).
    split = tuple(round(share, 4) for share in split_for(memory, override))
    split_by = "manifest" if override else "memory"
    measured = [
        BackendSpeed(m, (speeds or {}).get(s.endpoint)) for s, m in zip(ready, backend_memory(ready), strict=True)
    ]
    layer_bytes = _layer_bytes(file)
    counts = None
    if override is None and model.split_by is SplitBy.speed and file.n_layer and layer_bytes:
        counts = split_by_speed(measured, file.n_layer + 1, layer_bytes)
    if counts is not None:  # layer counts as shares: llama.cpp places exactly that many (assign_layers)
        kept = [i for i, count in enumerate(counts) if count]
        ready, measured = [ready[i] for i in kept], [measured[i] for i in kept]
        split, split_by = tuple(float(counts[i]) for i in kept), "speed"
    expected = None
    if file.n_layer and layer_bytes:
        layers = assign_layers(file.n_layer, split)
        per_backend = [layers.count(i) for i in range(len(split))]
        expected = expected_tokens_per_s(per_backend, layer_bytes, measured)
    held = {
        s.endpoint: [free, total]
        for s in ready
        if (free := s.free_bytes) is not None and (total := s.total_bytes) is not None
    }
    rounded = None if expected is None else round(expected, 1)
    used = {s.endpoint: m.bytes_per_s for s, m in zip(ready, measured, strict=True) if m.bytes_per_s}
    return RpcChoice(tuple(s.endpoint for s in ready), split, held, split_by, rounded, used)


def _layer_bytes(file: ModelFile) -> int | None:
    """Memory one offloaded layer needs, the output layer counted as one more: the whole file (the token
    embedding too, which stays on the coordinator: an over-estimate, on the safe side) and its KV cache."""
    if not file.n_layer:
        return None
    return math.ceil((file.size + (file.kv_bytes or 0)) / (file.n_layer + 1))


def backend_memory(servers: Sequence[RpcServer]) -> list[int | None]:
    """Free memory each rpc backend can give a model: its machine's figure shared evenly by the rpc-servers
    on that machine (as placement.split_for shares it)."""
    by_machine: dict[str, list[RpcMemory]] = {}
    for s in servers:
        by_machine.setdefault(s.machine, []).append(RpcMemory(s.name, s.machine, s.free_bytes))
    out: list[int | None] = []
    for s in servers:
        members = by_machine[s.machine]
        value = machine_bytes(members)
        out.append(None if value is None else value // len(members))
    return out


def pool_bytes(servers: Sequence[RpcServer]) -> int | None:
    """Free memory of the rpc backends together, each machine counted once; None when one is unknown."""
    by_machine: dict[str, int] = {}
    for server in servers:
        free = server.free_bytes
        if free is None:
            return None
        by_machine[server.machine] = max(by_machine.get(server.machine, 0), free)
    return sum(by_machine.values())
