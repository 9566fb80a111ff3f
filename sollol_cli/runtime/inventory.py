"""Every backend the cluster has, from the manifest: node roles (managed) and `backends` (used as they are)."""

from __future__ import annotations

from dataclasses import dataclass

from sollol_cli.backends.base import BackendRef
from sollol_cli.manifest.models import BackendKind, Cluster

GIB = 1024**3


@dataclass(frozen=True)
class BackendSpec:
    ref: BackendRef
    priority: int = 0
    machine: str = ""  # backends on one machine share its memory (several rpc-servers on localhost)
    hint_bytes: int | None = None  # manifest resources, used when nothing is measured
    managed: bool = True
    slots_hint: int | None = None  # configured parallelism (llama-server -np, OLLAMA_NUM_PARALLEL)
    alias: str | None = None  # llama-server: the model name clients use (manifest `alias`)
    rpc_devices: tuple[str, ...] = ()  # rpc-server: the devices the manifest names (`rpc.device`)
    memory_cap_bytes: int | None = None  # rpc-server: at most this much is planned for layers (`memory_mib`)

    @property
    def name(self) -> str:
        return self.ref.name


def _connect_host(bind: str | None, address: str) -> str:
    """Where the controller reaches a service: its bind address, unless that is a wildcard."""
    if bind and bind not in ("0.0.0.0", "::"):
        return bind
    return address


def inventory(cluster: Cluster) -> list[BackendSpec]:
    specs: list[BackendSpec] = []
    for node in cluster.nodes:
        hint = None
        if node.resources is not None:
            gib = max(node.resources.vram_gib or 0.0, node.resources.ram_gib or 0.0)
            hint = int(gib * GIB) if gib else None
        machine = node.machine
        multi = len(node.roles) > 1
        if node.ollama is not None:
            parallel = node.ollama.environment.get("OLLAMA_NUM_PARALLEL")
            host = _connect_host(node.ollama.bind, node.host)
            ref = BackendRef(_label(node.name, "ollama", multi), "ollama", host, node.ollama.port, node=node.name)
            slots = int(parallel) if parallel and parallel.isdigit() else None
            specs.append(BackendSpec(ref, node.priority, machine, hint, True, slots))
        if node.llamacpp is not None:
            host = _connect_host(node.llamacpp.bind, node.host)
            ref = BackendRef(_label(node.name, "llamacpp", multi), "llamacpp", host, node.llamacpp.port, node=node.name)
            served = node.llamacpp.served_name
            specs.append(BackendSpec(ref, node.priority, machine, hint, True, node.llamacpp.slots, served))
        if node.rpc is not None:
            host = _connect_host(node.rpc.bind, node.host)
            ref = BackendRef(_label(node.name, "rpc", multi), "rpc", host, node.rpc.port, node=node.name)
            cap = _mib(node.rpc.memory_mib)
            specs.append(
                BackendSpec(ref, node.priority, machine, hint, True, rpc_devices=node.rpc.devices, memory_cap_bytes=cap)
            )
    for backend in cluster.backends:
        ref = BackendRef(backend.label, backend.kind.value, backend.address, backend.effective_port)
        cap = _mib(backend.memory_mib)
        specs.append(
            BackendSpec(ref, backend.priority, backend.address, None, False, backend.slots, memory_cap_bytes=cap)
        )
    return specs


def _mib(value: int | None) -> int | None:
    return None if value is None else value * 1024**2


def _label(node: str, role: str, multi: bool) -> str:
    return f"{node}/{role}" if multi else node


def http_kinds() -> tuple[str, ...]:
    return (BackendKind.ollama.value, BackendKind.llamacpp.value)
