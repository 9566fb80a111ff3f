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
from sollol_cli.backends.base import Backend
from sollol_cli.backends.http import Timeouts
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.errors import BackendError, UsageError
from sollol_cli.llamacpp.build import resolve_binaries
from sollol_cli.llamacpp.sdist import RPC_PROTOCOL_VERSION
from sollol_cli.manifest.models import BackendKind, Cluster, Model, ModelMode, SplitBy, pooling_flags
from sollol_cli.names import normalize_model_name
from sollol_cli.settings import Settings
from sollol_cli.sharding import calibration, watchdog
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.decision import decide
from sollol_cli.sharding.hosts import CoordinatorHost, ModelFile
from sollol_cli.sharding.lifecycle import Coordinators, expected_after_load, placement_lines, speed_line
from sollol_cli.sharding.model_files import ModelFiles
from sollol_cli.sharding.planning import RpcChoice, choose_rpc_servers
from sollol_cli.sharding.pool import Backends, RpcServer
from sollol_cli.state import load_state


def can_shard(cluster: Cluster) -> bool:
    """Sharding needs rpc backends: node `rpc` roles or `backends:` of kind rpc."""
    return any(n.rpc for n in cluster.nodes) or any(b.kind is BackendKind.rpc for b in cluster.backends)


# A coordinator whose keep-alive ends sooner than this is marked in use when a request is handed to it.
EXPIRY_MARGIN_S = 10.0


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
        self.started: dict[str, coord.CoordinatorRecord] = {}  # by model: what this process started
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
        """The model's running coordinator, started when there is none; `report` hears what happened.

        A ready coordinator is used without waiting for anything. Otherwise the cluster's start lock is taken
        (across processes): whoever holds it is loading a coordinator, and the record is looked at again once
        it is ours, so every caller ends up on the one coordinator that was loaded."""
        model = self._manifest_model(name)
        record = await self._ready(model, report)
        if record is None:
            async with self._lock(model), self.coordinators.start_lock(f"coordinator {model.name}"):
                record = await self._ready(model, report) or await self._ensure(model, report)
        now = time.time()
        expires = coord.expires_at(record)
        # in use from now: written only when its keep-alive is about to run out, so another process's expiry
        # cannot stop it before the request reaches it (then its busy slot says so); `release` writes the end
        if expires is not None and expires - now < EXPIRY_MARGIN_S:
            coord.update_record(self.home, record, coord.used_at(now))
        routing = self.cluster.routing
        return LlamaServerBackend(coord.backend_ref(record), Timeouts(routing.connect_timeout, routing.read_timeout))

    async def release(
        self, name: str, backend: Backend, keep_alive: float | None = None, tokens_per_s: float | None = None
    ) -> None:
        """A request to `backend` ended: the keep-alive counts from now. As in Ollama, each request sets it
        (`keep_alive` in seconds, negative for ever; None: the manifest's), and 0 unloads the model.
        `tokens_per_s`: the request's decode speed, kept as the coordinator's measured speed (`status`)."""
        model = self.model(name)
        record = self._recorded(model, backend) if model else None
        if model is None or record is None:
            return
        if keep_alive == 0:
            await self.unload(name)
            return
        seconds = model.keep_alive if keep_alive is None else keep_alive

        def change(saved: coord.CoordinatorRecord) -> None:
            saved.last_used, saved.keep_alive = time.time(), seconds
            if tokens_per_s is not None:
                saved.measured_tokens_per_s = round(tokens_per_s, 1)

        coord.update_record(self.home, record, change)

    async def unload(self, name: str) -> None:
        """`keep_alive: 0`: stop the coordinator now, or once the requests it is serving have ended (the
        keep-alive loop of `serve`, or the watchdog of a coordinator `run` left warm, stops it then). One that
        is still loading belongs to the process loading it and is left alone."""
        model = self.model(name)
        if model is None:
            return
        record = coord.load_record(self.home, model.name, self.reporter)
        if record is None or record.ready_after_s is None:
            return

        def change(saved: coord.CoordinatorRecord) -> None:
            saved.keep_alive, saved.last_used = 0.0, time.time()

        if not coord.update_record(self.home, record, change) or await self.coordinators.busy(record):
            return
        await self.coordinators.stop(record)
        self.started.pop(model.name, None)

    async def discard(self, name: str, backend: Backend, report: events.Reporter = events.ignore) -> None:
        """`backend`, the model's coordinator, failed a request: stop what is left of it so the next call
        re-plans (and decides again: the rpc backends it was decided on have changed). Only if it is still the
        recorded one: another process may have replaced it already, and the replacement is not to be stopped."""
        self._decisions.pop(name, None)
        model = self.model(name)
        record = self._recorded(model, backend) if model else None
        if model is None or record is None:
            return
        log = await self.coordinators.log(record)
        report(events.CoordinatorFailed(model.name, coord.last_lines(log, 2)))
        await self.coordinators.stop(record)

    def _recorded(self, model: Model, backend: Backend) -> coord.CoordinatorRecord | None:
        """The model's record if it still describes the coordinator `backend` talks to."""
        record = coord.load_record(self.home, model.name)
        ref = backend.ref
        if record is None or (record.host, record.port, record.node) != (ref.host, ref.port, ref.node):
            return None
        return record

    def _manifest_model(self, name: str) -> Model:
        model = self.model(name)
        if model is None:
            raise BackendError(f"model '{name}' is not in the manifest, so it cannot be sharded")
        return model

    def _lock(self, model: Model) -> asyncio.Lock:
        return self._locks.setdefault(model.name, asyncio.Lock())

    async def _ready(self, model: Model, report: events.Reporter) -> coord.CoordinatorRecord | None:
        """The model's coordinator if it is ready to serve where the manifest wants it (no lock needed: a
        record says ready only once its /health said so)."""
        record = coord.load_record(self.home, model.name)
        if record is None or record.ready_after_s is None or record.node != model.coordinator:
            return None
        if self._gone_rpc(record):
            return None
        if not await self.coordinators.still_running(record):
            return None
        placement, speed = tuple(record.placement), speed_line(record)
        report(events.CoordinatorReused(model.name, record.node, record.pid, record.port, placement, speed))
        return record

    async def _ensure(self, model: Model, report: events.Reporter) -> coord.CoordinatorRecord:
        """Start the model's coordinator. Called with the start lock held and no ready coordinator found, so
        a record still here describes one that cannot serve: moved, exited, or left loading by a process that
        died (the loading process holds the lock until ready)."""
        coordinators = self.coordinators
        coord.adopt_orphans(self.home, self.reporter)
        await coordinators.expire()
        record = coord.load_record(self.home, model.name, self.reporter)
        if record is not None:
            if record.node != model.coordinator:
                report(events.CoordinatorMoved(model.name, record.where, _where(model)))
            elif gone := self._gone_rpc(record):
                report(events.CoordinatorOutdated(model.name, gone))
            elif record.ready_after_s is None and await coordinators.still_running(record):
                report(events.CoordinatorAbandoned(model.name, record.pid))
            else:
                report(events.CoordinatorExited(model.name, coord.last_lines(await coordinators.log(record), 2)))
            await coordinators.stop(record)
        await self._evict_others(model, report)
        host = coordinators.host_for(model.coordinator)
        plan, choice, file = await self._plan(model, host)
        record = await host.start(plan, self._llama_server(), model.keep_alive)
        record.rpc_memory = choice.memory
        record.n_layer = file.n_layer
        record.split = list(plan.split or ())
        record.split_by, record.expected_tokens_per_s = choice.split_by, choice.expected_tokens_per_s
        record.rpc_speeds = choice.speeds
        record.devices = list(choice.devices)
        # recorded while it loads, not ready yet: `down` and a crashed loader's successor can find and stop it
        coord.save_record(self.home, record)
        self.started[model.name] = record
        try:
            record.ready_after_s = await coord.wait_ready(
                record, host, timeout=self.ready_timeout, reporter=self.reporter
            )
        except BaseException:
            await coordinators.stop(record)
            raise
        log = await host.log_text(record)
        record.placement = placement_lines(record, log)
        # what it holds, now that its log says so, beats the estimate made before loading
        record.expected_tokens_per_s = expected_after_load(record, log) or record.expected_tokens_per_s
        coord.save_record(self.home, record)  # now ready: other processes may route to it
        if not self.stop_on_close:  # left warm after this command: something must stop it when idle
            watchdog.spawn(self.cluster, self.settings, record)
        placement, speed = tuple(record.placement), speed_line(record)
        report(events.CoordinatorStarted(model.name, record.node, record.pid, record.ready_after_s, placement, speed))
        return record

    def _gone_rpc(self, record: coord.CoordinatorRecord) -> tuple[str, ...]:
        """The rpc endpoints a running coordinator holds that the manifest no longer has (edited, or ports
        changed): it cannot be reused, its layers are on servers that are not the cluster's."""
        ours = self._rpc_endpoints()
        return tuple(endpoint for endpoint in record.rpc if endpoint not in ours)

    def _rpc_endpoints(self) -> set[str]:
        """`host:port` of every rpc backend the manifest has, as coordinator records keep them."""
        return {server.endpoint for server in self.backends.rpc_servers()}

    async def _evict_others(self, model: Model, report: events.Reporter) -> None:
        """An rpc-server serves one coordinator at a time, so switching sharded models means unloading the
        other one first (as Ollama unloads a model to load another when memory is short)."""
        ours = self._rpc_endpoints()
        for other in coord.all_records(self.home, self.reporter):
            if other.model != model.name and ours & set(other.rpc) and await self.coordinators.still_running(other):
                await self.coordinators.stop(other)
                report(events.CoordinatorEvicted(other.model, model.name))

    async def _plan(self, model: Model, host: CoordinatorHost) -> tuple[coord.CoordinatorPlan, RpcChoice, ModelFile]:
        """Probe the rpc backends now and decide which ones the coordinator uses."""
        file = await self.files.find(model)
        servers = await self.backends.probe_rpc_servers()
        protocol = self._protocol()
        state = load_state(self.settings.state_dir, self.cluster.name)
        speeds = await self._speeds(model, servers, protocol)
        choice = choose_rpc_servers(model, file, servers, protocol, state, speeds)
        gguf = await host.model_path(file)
        bind = self.cluster.node(model.coordinator).host if model.coordinator else "127.0.0.1"
        flags = tuple(pooling_flags(model.embeddings, model.pooling))
        plan = coord.CoordinatorPlan(
            model.name, gguf, choice.endpoints, model.context, model.slots, choice.split, bind, flags
        )
        return plan, choice, file

    async def measure_speeds(self, name: str) -> None:
        """`sollol bench`: measure the model's rpc backends again (those no coordinator holds), for the split
        of its next coordinator. Under the start lock: a coordinator starting meanwhile would find them busy."""
        model = self._manifest_model(name)
        async with self._lock(model), self.coordinators.start_lock(f"measuring rpc backends for {model.name}"):
            servers = await self.backends.probe_rpc_servers()
            await self._speeds(model, servers, self._protocol(), again=True)

    def _protocol(self) -> str:
        return self.cluster.llama_cpp.protocol or ".".join(map(str, RPC_PROTOCOL_VERSION))

    async def _speeds(
        self, model: Model, servers: list[RpcServer], protocol: str, *, again: bool = False
    ) -> dict[str, float]:
        """endpoint -> measured speed of the ready rpc backends, measuring those never measured (all of them
        `again`) when the split depends on it: rpc backends on two or more machines, no manifest `tensor_split`
        and `split_by: speed` (calibration.py)."""
        usable = [s for s in servers if s.probe is not None and s.probe.state == "ready" and s.speaks(protocol)]
        state_dir = self.settings.state_dir
        # rpc-servers on one machine share its cores: measuring each would tell nothing (`sollol demo`'s pair)
        if len({s.machine for s in usable}) < 2 or model.tensor_split or model.split_by is SplitBy.memory:
            return calibration.known_speeds(state_dir, usable, protocol)
        try:
            llama_server = self._llama_server()
        except UsageError:  # no llama-server on this machine to measure with: the kept speeds only
            return calibration.known_speeds(state_dir, usable, protocol)
        return await calibration.calibrate_all(
            usable, protocol, llama_server=llama_server, state_dir=state_dir, cache_dir=self.settings.cache_dir,
            home=self.home, reporter=self.reporter, force=again,
        )  # fmt: skip

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
                for started in self.started.values():
                    record = coord.load_record(self.home, started.model)
                    if record is not None and coord.same_process(record, started):
                        await self.coordinators.stop(record)  # only what this process started and still runs
        finally:
            await self.coordinators.close()


def _where(model: Model) -> str:
    return f"node {model.coordinator}" if model.coordinator else "this machine"
