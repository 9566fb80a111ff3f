"""Which models run sharded, and their coordinators while this process serves them: start, reuse, replace,
release, unload.

The dispatcher asks `handles(model)`; for sharded models it asks `backend_for(model)` and gets the
coordinator's llama-server as an ordinary backend (same Ollama translation as llama-server nodes). The
decision (decision.py), the model file (model_files.py), the choice of rpc backends (planning.py) and the
recorded coordinators (lifecycle.py) live in modules of their own; this one puts them together.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sollol_cli import events
from sollol_cli.backends.http import Timeouts
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.errors import BackendError, UsageError
from sollol_cli.llamacpp.build import resolve_binaries
from sollol_cli.llamacpp.sdist import RPC_PROTOCOL_VERSION
from sollol_cli.manifest.models import BackendKind, Cluster, Model, ModelMode, pooling_flags
from sollol_cli.names import normalize_model_name
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding import watchdog
from sollol_cli.sharding.decision import decide
from sollol_cli.sharding.hosts import CoordinatorHost, ModelFile
from sollol_cli.sharding.lifecycle import Coordinators, placement_lines
from sollol_cli.sharding.model_files import ModelFiles
from sollol_cli.sharding.planning import RpcChoice, choose_rpc_servers
from sollol_cli.sharding.pool import Backends
from sollol_cli.state import load_state


def can_shard(cluster: Cluster) -> bool:
    """Sharding needs rpc backends: node `rpc` roles or `backends:` of kind rpc."""
    return any(n.rpc for n in cluster.nodes) or any(b.kind is BackendKind.rpc for b in cluster.backends)


class ShardManager:
    def __init__(
        self,
        cluster: Cluster,
        settings: Settings,
        backends: Backends,
        *,
        reporter: events.Reporter = events.ignore,
        stop_on_close: bool = False,
        ready_timeout: float = 600.0,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.backends = backends
        self.reporter = reporter  # progress of long steps (loading, copying a model); not per request
        self.stop_on_close = stop_on_close  # `serve` stops what it started; `run` leaves it warm
        self.ready_timeout = ready_timeout
        self.coordinators = Coordinators(cluster, settings, reporter=reporter)
        self.files = ModelFiles(cluster, settings, reporter=reporter)
        self.started: set[str] = set()
        self._decisions: dict[str, tuple[bool, str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def home(self) -> Path:
        return self.coordinators.home

    def model(self, name: str) -> Model | None:
        key = normalize_model_name(name)
        for model in self.cluster.models:
            if normalize_model_name(model.name) == key:
                return model
        return None

    def handles(self, name: str) -> tuple[bool, str]:
        """(shard?, why), decided once per model from what the backends reported then."""
        if name not in self._decisions:
            model = self.model(name)
            file = self.files.get_or_none(model) if model and model.mode is not ModelMode.distribute else None
            state = load_state(self.settings.state_dir, self.cluster.name)
            serving, rpc_servers = self.backends.serving(), self.backends.rpc_servers()
            self._decisions[name] = decide(name, model, file, serving, rpc_servers, state)
        return self._decisions[name]

    # --- one request's coordinator ---

    async def backend_for(self, name: str, report: events.Reporter = events.ignore) -> LlamaServerBackend:
        """The model's running coordinator, started when there is none; `report` hears what happened."""
        model = self._manifest_model(name)
        async with self._lock(model):
            record = await self._ensure(model, report)
        record.last_used = time.time()
        coord.save_record(self.home, record)
        routing = self.cluster.routing
        return LlamaServerBackend(coord.backend_ref(record), Timeouts(routing.connect_timeout, routing.read_timeout))

    async def release(self, name: str, keep_alive: float | None = None) -> None:
        """A request ended: the keep-alive counts from now. As in Ollama, each request sets it (`keep_alive`
        in seconds, negative for ever; None: the manifest's), and 0 unloads the model."""
        model = self.model(name)
        record = coord.load_record(self.home, model.name) if model else None
        if model is None or record is None:
            return
        if keep_alive == 0:
            await self.unload(name)
            return
        record.last_used = time.time()
        record.keep_alive = model.keep_alive if keep_alive is None else keep_alive
        coord.save_record(self.home, record)

    async def unload(self, name: str) -> None:
        """`keep_alive: 0`: stop the coordinator now, or once the requests it is serving have ended (the
        keep-alive loop of `serve`, or the watchdog of a coordinator `run` left warm, stops it then)."""
        model = self.model(name)
        if model is None:
            return
        async with self._lock(model):
            record = coord.load_record(self.home, model.name)
            if record is None:
                return
            record.keep_alive, record.last_used = 0.0, time.time()
            coord.save_record(self.home, record)
            if await self.coordinators.busy(record):
                return
            await self.coordinators.stop(record)
            self.started.discard(model.name)

    async def discard(self, name: str, report: events.Reporter = events.ignore) -> None:
        """The coordinator failed a request: stop what is left of it so the next call re-plans (and decides
        again: the rpc backends it was decided on have changed)."""
        self._decisions.pop(name, None)
        model = self.model(name)
        if model is None:
            return
        record = coord.load_record(self.home, model.name)
        if record is not None:
            log = await self.coordinators.log(record)
            report(events.CoordinatorFailed(model.name, coord.last_lines(log, 2)))
            await self.coordinators.stop(record)

    def _manifest_model(self, name: str) -> Model:
        model = self.model(name)
        if model is None:
            raise BackendError(f"model '{name}' is not in the manifest, so it cannot be sharded")
        return model

    def _lock(self, model: Model) -> asyncio.Lock:
        return self._locks.setdefault(model.name, asyncio.Lock())

    async def _ensure(self, model: Model, report: events.Reporter) -> coord.CoordinatorRecord:
        coordinators = self.coordinators
        await coordinators.expire()
        record = coord.load_record(self.home, model.name)
        if record is not None and record.node != model.coordinator:
            report(events.CoordinatorMoved(model.name, record.where, _where(model)))
            await coordinators.stop(record)
            record = None
        if record is not None:
            if await coordinators.still_running(record):
                placement = tuple(record.placement)
                report(events.CoordinatorReused(model.name, record.node, record.pid, record.port, placement))
                return record
            report(events.CoordinatorExited(model.name, coord.last_lines(await coordinators.log(record), 2)))
            await coordinators.stop(record)
        await self._evict_others(model, report)
        host = coordinators.host_for(model.coordinator)
        plan, choice, file = await self._plan(model, host)
        record = await host.start(plan, self._llama_server(), model.keep_alive)
        record.rpc_memory = choice.memory
        record.n_layer = file.n_layer
        record.split = list(plan.split or ())
        coord.save_record(self.home, record)
        self.started.add(model.name)
        try:
            record.ready_after_s = await coord.wait_ready(
                record, host, timeout=self.ready_timeout, reporter=self.reporter
            )
        except BaseException:
            await coordinators.stop(record)
            raise
        record.placement = placement_lines(record, await host.log_text(record))
        coord.save_record(self.home, record)
        if not self.stop_on_close:  # left warm after this command: something must stop it when idle
            watchdog.spawn(self.cluster, self.settings, record)
        placement = tuple(record.placement)
        report(events.CoordinatorStarted(model.name, record.node, record.pid, record.ready_after_s, placement))
        return record

    async def _evict_others(self, model: Model, report: events.Reporter) -> None:
        """An rpc-server serves one coordinator at a time, so switching sharded models means unloading the
        other one first (as Ollama unloads a model to load another when memory is short)."""
        ours = {server.endpoint for server in self.backends.rpc_servers()}
        for other in coord.all_records(self.home):
            if other.model != model.name and ours & set(other.rpc) and await self.coordinators.still_running(other):
                await self.coordinators.stop(other)
                report(events.CoordinatorEvicted(other.model, model.name))

    async def _plan(self, model: Model, host: CoordinatorHost) -> tuple[coord.CoordinatorPlan, RpcChoice, ModelFile]:
        """Probe the rpc backends now and decide which ones the coordinator uses."""
        file = await self.files.find(model)
        servers = await self.backends.probe_rpc_servers()
        protocol = self.cluster.llama_cpp.protocol or ".".join(map(str, RPC_PROTOCOL_VERSION))
        choice = choose_rpc_servers(model, file, servers, protocol)
        gguf = await host.model_path(file)
        bind = self.cluster.node(model.coordinator).host if model.coordinator else "127.0.0.1"
        flags = tuple(pooling_flags(model.embeddings, model.pooling))
        plan = coord.CoordinatorPlan(
            model.name, gguf, choice.endpoints, model.context, model.slots, choice.split, bind, flags
        )
        return plan, choice, file

    def _llama_server(self) -> str:
        if self.settings.llama_server_path:
            return str(self.settings.llama_server_path)
        if self.cluster.llama_cpp.bin_dir:
            return str(Path(self.cluster.llama_cpp.bin_dir).expanduser() / "llama-server")
        binaries = resolve_binaries(self.settings)
        if binaries is None:
            raise UsageError("sharding needs llama-server on the controller", hint="run `sollol llama-cpp build`")
        return str(binaries.llama_server)

    async def close(self) -> None:
        try:
            if self.stop_on_close:
                for name in sorted(self.started):
                    record = coord.load_record(self.home, name)
                    if record is not None:
                        await self.coordinators.stop(record)
        finally:
            await self.coordinators.close()


def _where(model: Model) -> str:
    return f"node {model.coordinator}" if model.coordinator else "this machine"
