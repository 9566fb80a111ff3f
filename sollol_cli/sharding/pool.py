"""What sharding reads of the cluster's backends, as data. The runtime's monitor provides it (`Backends`), so
sharding never imports the runtime: the runtime uses sharding, not the reverse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sollol_cli.backends.base import ModelEntry
from sollol_cli.backends.rpc import RpcProbe


@dataclass(frozen=True)
class RpcServer:
    """One rpc backend and what its last probe saw (None: never probed)."""

    name: str
    host: str
    port: int
    machine: str  # rpc-servers on one machine share its memory
    hint_bytes: int | None = None  # manifest `resources`
    probe: RpcProbe | None = None
    memory_cap: int | None = None  # manifest `memory_mib`: at most this much of its memory is planned for

    @property
    def endpoint(self) -> str:
        """`host:port` as llama-server's `--rpc` takes it and a coordinator record keeps it."""
        return f"{self.host}:{self.port}"

    def speaks(self, protocol: str) -> bool:
        """Whether its last probe saw the rpc protocol version `protocol` ("3.0.0")."""
        return self.probe is not None and ".".join(map(str, self.probe.protocol or ())) == protocol

    @property
    def free_bytes(self) -> int | None:
        devices = self.probe.devices if self.probe is not None else ()
        return self._capped(sum(d.free for d in devices)) if devices else None

    @property
    def total_bytes(self) -> int | None:
        devices = self.probe.devices if self.probe is not None else ()
        return self._capped(sum(d.total for d in devices)) if devices else None

    def _capped(self, value: int) -> int:
        return value if self.memory_cap is None else min(value, self.memory_cap)


@dataclass(frozen=True)
class ServingBackend:
    """An Ollama or llama-server backend that answered its last probe, with the models it has."""

    name: str
    node: str | None  # the manifest node it runs on (None: a `backends:` entry)
    machine: str
    hint_bytes: int | None
    models: tuple[ModelEntry, ...]


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
