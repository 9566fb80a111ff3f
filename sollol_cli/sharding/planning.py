"""Which rpc backends a coordinator uses and how the layers are split over their devices, from a fresh probe
of each (pure: the shard manager probes, this decides)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sollol_cli.errors import BackendError, NoHealthyBackend, NotEnoughMemory
from sollol_cli.manifest.models import Model, SplitBy
from sollol_cli.placement import device_bytes, rpc_pool, split_for
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.layer_split import BackendSpeed, expected_tokens_per_s, split_by_speed
from sollol_cli.sharding.placement_log import assign_layers
from sollol_cli.sharding.pool import RpcServer
from sollol_cli.state import ClusterState


@dataclass(frozen=True)
class RpcChoice:
    endpoints: tuple[str, ...]  # in layer order
    split: tuple[float, ...]  # one share per device (llama-server -ts), in `devices` order
    memory: dict[str, list[int]]  # endpoint -> [free, total] bytes of each device when planned (see held)
    # the devices' labels (pool.ServedDevice.label) in -ts order when an rpc-server serves several; empty when
    # each serves one: then the endpoints are the devices
    devices: tuple[str, ...] = ()
    split_by: str = "memory"  # memory | speed | manifest
    expected_tokens_per_s: float | None = None  # from the split and the devices' measured speeds
    speeds: dict[str, float] = field(default_factory=dict)  # device label -> measured bytes/s, of those used


def choose_rpc_servers(
    model: Model,
    file: ModelFile,
    servers: Sequence[RpcServer],
    protocol: str,
    state: ClusterState | None = None,
    speeds: Mapping[str, float] | None = None,
) -> RpcChoice:
    """The ready rpc backends that speak `protocol`; refuses when none is ready, when one speaks another
    protocol, or when some are missing and the ready ones cannot hold the model. `state`: what `up` recorded
    of the nodes (their builds tell a GPU device from a CPU one).

    The split: a manifest `tensor_split` wins; else, unless the model says `split_by: memory`, by measured
    speed (`speeds`: device label -> bytes of layer weights per second, see layer_split.py; an rpc-server's
    label is its endpoint when it serves one device), which may leave out rpc backends the faster ones make
    unnecessary; else, and when the speeds do not decide, by memory."""
    ready, unusable = [], []
    for server in servers:
        probe = server.probe
        if probe is None or probe.state != "ready":
            seen = "busy (another coordinator is attached)" if probe and probe.state == "busy" else "down"
            unusable.append(f"{server.name} ({server.endpoint}) is {seen}")
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
    nodes = state.nodes if state is not None else {}
    memory = [device for s in ready for device in s.memory(nodes.get(s.node or ""))]
    labels = tuple(device.label for s in ready for device in s.devices(nodes.get(s.node or "")))
    need = file.size + (file.kv_bytes or 0)
    pool = rpc_pool(memory)
    have = None if pool.unknown else pool.total_bytes
    if unusable and have is not None and have < need:
        raise NotEnoughMemory(
            f"model '{model.name}' needs {need / 2**30:.1f} GiB but the ready rpc backends have "
            f"{have / 2**30:.1f} GiB; missing: {'; '.join(unusable)}"
        )
    # the manifest's split is one share per device: with every rpc backend there, a wrong count is the user's to
    # fix (the manifest check knows the count only where nodes name their devices); with some missing, the
    # shares no longer fit and the split follows memory
    split_fits = model.tensor_split is not None and (len(model.tensor_split) == len(memory) or not unusable)
    override = model.tensor_split if split_fits else None
    # Always an explicit split: llama.cpp's default follows free memory at load time, which would make
    # the layer placement unpredictable; with -ts it is computed exactly (placement_log.assign_layers).
    split = tuple(round(share, 4) for share in split_for(memory, override))
    split_by = "manifest" if override else "memory"
    measured = [
        BackendSpeed(m, (speeds or {}).get(label))
        for m, label in zip(_whole(device_bytes(memory)), labels, strict=True)
    ]
    layer_bytes = _layer_bytes(file)
    counts = None
    if override is None and model.split_by is SplitBy.speed and file.n_layer and layer_bytes:
        counts = split_by_speed(measured, file.n_layer + 1, layer_bytes)
    if counts is not None:  # layer counts as shares: llama.cpp places exactly that many (assign_layers)
        owners = [s.endpoint for s in ready for _ in s.devices(nodes.get(s.node or ""))]
        # an rpc backend is left out only when none of its devices gets a layer
        used = {owner for owner, count in zip(owners, counts, strict=True) if count}
        kept = [i for i, owner in enumerate(owners) if owner in used]
        ready = [s for s in ready if s.endpoint in used]
        measured, labels = [measured[i] for i in kept], tuple(labels[i] for i in kept)
        split, split_by = tuple(float(counts[i]) for i in kept), "speed"
    expected = None
    if file.n_layer and layer_bytes:
        layers = assign_layers(file.n_layer, split)
        per_device = [layers.count(i) for i in range(len(split))]
        expected = expected_tokens_per_s(per_device, layer_bytes, measured)
    # [free, total] of each device, flat: what `status` shows of an rpc-server while the coordinator holds it
    held = {s.endpoint: pairs for s in ready if (pairs := _memory_pairs(s))}
    endpoints = tuple(s.endpoint for s in ready)
    rounded = None if expected is None else round(expected, 1)
    rates = {label: m.bytes_per_s for label, m in zip(labels, measured, strict=True) if m.bytes_per_s}
    return RpcChoice(endpoints, split, held, labels if labels != endpoints else (), split_by, rounded, rates)


def _layer_bytes(file: ModelFile) -> int | None:
    """Memory one offloaded layer needs, the output layer counted as one more: the whole file (the token
    embedding too, which stays on the coordinator: an over-estimate, on the safe side) and its KV cache."""
    if not file.n_layer:
        return None
    return math.ceil((file.size + (file.kv_bytes or 0)) / (file.n_layer + 1))


def _whole(sizes: Sequence[float | None]) -> list[int | None]:
    return [None if size is None else int(size) for size in sizes]


def _memory_pairs(server: RpcServer) -> list[int]:
    devices = server.probe.devices if server.probe is not None else ()
    return [n for device in devices for n in (device.free, device.total)]
