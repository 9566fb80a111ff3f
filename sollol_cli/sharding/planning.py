"""Which rpc backends a coordinator uses and how the layers are split over them, from a fresh probe of
each (pure: the shard manager probes, this decides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sollol_cli.errors import BackendError, NoHealthyBackend, NotEnoughMemory
from sollol_cli.manifest.models import Model
from sollol_cli.placement import RpcMemory, split_for
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.pool import RpcServer


@dataclass(frozen=True)
class RpcChoice:
    endpoints: tuple[str, ...]  # in layer order
    split: tuple[float, ...]  # one share per endpoint (llama-server -ts)
    memory: dict[str, list[int]]  # endpoint -> [free, total] bytes when planned (shown while it holds them)


def choose_rpc_servers(model: Model, file: ModelFile, servers: Sequence[RpcServer], protocol: str) -> RpcChoice:
    """The ready rpc backends that speak `protocol`; refuses when none is ready, when one speaks another
    protocol, or when some are missing and the ready ones cannot hold the model."""
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
    held = {
        s.endpoint: [free, total]
        for s in ready
        if (free := s.free_bytes) is not None and (total := s.total_bytes) is not None
    }
    return RpcChoice(tuple(s.endpoint for s in ready), split, held)


def pool_bytes(servers: Sequence[RpcServer]) -> int | None:
    """Free memory of the rpc backends together, each machine counted once; None when one is unknown."""
    by_machine: dict[str, int] = {}
    for server in servers:
        free = server.free_bytes
        if free is None:
            return None
        by_machine[server.machine] = max(by_machine.get(server.machine, 0), free)
    return sum(by_machine.values())
