"""Which models run sharded, and their coordinators: start, reuse, supervise, expire.

The dispatcher asks `handles(model)`; for sharded models it asks `backend_for(model)` and gets the
coordinator's llama-server as an ordinary backend (same Ollama translation as llama-server nodes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sollol_cli import events
from sollol_cli.errors import BackendError, NoHealthyBackend, UsageError
from sollol_cli.manifest.models import Cluster, Model, ModelMode, pooling_flags
from sollol_cli.router import normalize_model_name
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.hosts import ControllerHost, CoordinatorHost, ModelFile, NodeHost

if TYPE_CHECKING:
    from sollol_cli.backends.llamacpp import LlamaServerBackend
    from sollol_cli.runtime.dispatch import Trace
    from sollol_cli.runtime.monitor import Monitor


class ShardManager:
    def __init__(
        self,
        cluster: Cluster,
        settings: Settings,
        *,
        reporter: events.Reporter = events.ignore,
        stop_on_close: bool = False,
        ready_timeout: float = 600.0,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.reporter = reporter
        self.stop_on_close = stop_on_close  # `serve` stops what it started; `run` leaves it warm
        self.ready_timeout = ready_timeout
        self.monitor: Monitor | None = None
        self.home = coordinator_home(settings, cluster.name)
        self.started: set[str] = set()
        self._decisions: dict[str, tuple[bool, str]] = {}
        self._files: dict[str, ModelFile] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._rpc_memory_at_plan: dict[str, list[int]] = {}
        self._hosts: dict[str, NodeHost] = {}

    def attach(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def model(self, name: str) -> Model | None:
        key = normalize_model_name(name)
        for model in self.cluster.models:
            if normalize_model_name(model.name) == key:
                return model
        return None

    # --- the hybrid decision ---

    def handles(self, name: str) -> tuple[bool, str]:
        if name not in self._decisions:
            self._decisions[name] = self._decide(name)
        return self._decisions[name]

    def _decide(self, name: str) -> tuple[bool, str]:
        model = self.model(name)
        if model is None:
            return False, "distribute: not a manifest model, served by the nodes that have it"
        if model.mode is ModelMode.distribute:
            return False, "distribute (set in the manifest)"
        from sollol_cli.placement import ModelSize, Placement, decide_mode, estimate_overhead_bytes

        file = self._file_or_none(model)
        weights = file.size if file else self._reported_size(name)
        if weights is None and model.mode is ModelMode.auto:
            return False, "distribute: model size unknown (no GGUF found, no node reports it)"
        size = ModelSize(weights or 0, (file.kv_bytes if file else None) or 0, estimate_overhead_bytes(weights or 0))
        decision = decide_mode(name, size, model.mode, self._node_memory(name), self._rpc_memory())
        return decision.mode is Placement.shard, decision.reason

    def _reported_size(self, name: str) -> int | None:
        if self.monitor is None:
            return None
        key = normalize_model_name(name)
        for view in self.monitor.views.values():
            for entry in view.status.models if view.status else []:
                if normalize_model_name(entry.name) == key and entry.size:
                    return entry.size
        return None

    def _node_memory(self, name: str) -> list:  # type: ignore[type-arg]
        from sollol_cli.placement import NodeMemory
        from sollol_cli.state import load_state

        if self.monitor is None:
            return []
        state = load_state(self.settings.state_dir, self.cluster.name)
        key = normalize_model_name(name)
        out = []
        for view in self.monitor.views.values():
            if view.spec.ref.kind == "rpc" or view.status is None:
                continue
            if not any(normalize_model_name(m.name) == key for m in view.status.models):
                continue
            node = state.nodes.get(view.spec.ref.node or "")
            free = node.mem_available_bytes if node else None
            out.append(NodeMemory(view.name, view.spec.machine, free, view.spec.hint_bytes))
        return out

    def _rpc_memory(self) -> list:  # type: ignore[type-arg]
        from sollol_cli.placement import RpcMemory

        if self.monitor is None:
            return []
        out = []
        for view in self.monitor.views.values():
            if view.spec.ref.kind != "rpc":
                continue
            probe = view.rpc
            free = sum(d.free for d in probe.devices) if probe is not None and probe.devices else None
            out.append(RpcMemory(view.name, view.spec.machine, free, view.spec.hint_bytes))
        return out

    # --- the model file ---

    def _file_or_none(self, model: Model) -> ModelFile | None:
        try:
            return self.model_file(model)
        except BackendError:
            return None

    def model_file(self, model: Model) -> ModelFile:
        if model.name in self._files:
            return self._files[model.name]
        from sollol_cli.errors import SollolError
        from sollol_cli.sharding.gguf_info import kv_cache_bytes, read_gguf_info

        if model.store_node and model.name not in self._files:
            raise BackendError(f"model '{model.name}' is on node {model.store_node}; it is copied when first used")
        try:
            if model.gguf:
                path = Path(model.gguf).expanduser()
            else:
                from sollol_cli.sharding.ollama_store import resolve_model

                store = Path(model.store).expanduser() if model.store else None
                path = resolve_model(model.ollama_model or model.name, store).gguf_path
            info = read_gguf_info(path)
        except SollolError as exc:
            raise BackendError(f"model '{model.name}': {exc.message}", hint=exc.hint) from None
        file = ModelFile(str(path), info.file_size, kv_cache_bytes(info, model.context), info.block_count)
        self._files[model.name] = file
        return file

    async def _fetch_from_node(self, model: Model) -> None:
        """The GGUF lives in an Ollama store on a node: resolve it there. When the coordinator runs on that
        node it is used where it is (only its metadata is read); else it is copied here, cached by digest."""
        from sollol_cli.errors import SollolError
        from sollol_cli.provision.connect import runner_factory
        from sollol_cli.sharding.gguf_info import kv_cache_bytes, read_gguf_info
        from sollol_cli.sharding.remote_store import fetch_model, locate_model, remote_info

        assert model.store_node is not None
        node = self.cluster.node(model.store_node)
        name = model.ollama_model or model.name
        try:
            runner = await runner_factory(self.cluster, self.settings)(node)
            async with runner:
                if model.coordinator == node.name:
                    blob = await locate_model(runner, node.name, name, model.store)
                    info = await remote_info(runner, node.name, blob)
                    kv = kv_cache_bytes(info, model.context)
                    file = ModelFile(blob.path, blob.size, kv, info.block_count, blob.digest, node.name)
                else:
                    cache = self.settings.cache_dir
                    path = await fetch_model(runner, node.name, name, model.store, cache, self.reporter)
                    info = read_gguf_info(path)
                    kv = kv_cache_bytes(info, model.context)
                    digest = path.stem.removeprefix("sha256-")
                    file = ModelFile(str(path), info.file_size, kv, info.block_count, digest)
        except SollolError as exc:
            raise BackendError(f"model '{model.name}': {exc.message}", hint=exc.hint) from None
        self._files[model.name] = file

    def _n_layer(self, model: Model) -> int | None:
        file = self._files.get(model.name)
        return file.n_layer if file else None

    # --- coordinators ---

    def host_for(self, node: str | None) -> CoordinatorHost:
        """Where a coordinator runs (None: this machine). Node hosts keep one SSH connection until close."""
        if node is None:
            return ControllerHost(self.home)
        if node not in self._hosts:
            self._hosts[node] = NodeHost(self.cluster, self.settings, self.cluster.node(node), reporter=self.reporter)
        return self._hosts[node]

    async def backend_for(self, name: str, trace: Trace) -> LlamaServerBackend:
        from sollol_cli.backends.llamacpp import LlamaServerBackend

        model = self.model(name)
        if model is None:
            raise BackendError(f"model '{name}' is not in the manifest, so it cannot be sharded")
        lock = self._locks.setdefault(model.name, asyncio.Lock())
        async with lock:
            record = await self._ensure(model, trace)
        record.last_used = time.time()
        coord.save_record(self.home, record)
        return LlamaServerBackend(coord.backend_ref(record), _timeouts(self.cluster))

    async def release(self, name: str) -> None:
        model = self.model(name)
        record = coord.load_record(self.home, model.name) if model else None
        if record is not None:
            record.last_used = time.time()
            coord.save_record(self.home, record)

    async def discard(self, name: str, trace: Trace) -> None:
        """The coordinator failed a request: stop what is left of it so the next call re-plans."""
        model = self.model(name)
        if model is None:
            return
        record = coord.load_record(self.home, model.name)
        if record is not None:
            log = await self._log(record)
            trace.notes.append(f"the coordinator failed ({coord.last_lines(log, 2)}); re-planning")
            await self._stop(record)

    async def _log(self, record: coord.CoordinatorRecord) -> str:
        from sollol_cli.errors import SshError

        try:
            return await self.host_for(record.node).log_text(record)
        except SshError as exc:
            return f"its log is out of reach: {exc.message}"

    async def _stop(self, record: coord.CoordinatorRecord) -> bool:
        """Stop and forget; on an unreachable node it is left to `sollol down` (the node keeps its pidfile)."""
        from sollol_cli.errors import SshError

        try:
            stopped = await self.host_for(record.node).stop(record)
        except SshError:
            stopped = False
        coord.forget_record(self.home, record.model)
        return stopped

    async def running(self) -> dict[str, coord.CoordinatorRecord]:
        """The coordinators that run now, by model (each checked, those on nodes over HTTP, concurrently)."""
        records = coord.all_records(self.home)
        checks = await asyncio.gather(*(self._still_running(record) for record in records))
        return {record.model: record for record, up in zip(records, checks, strict=True) if up}

    async def _still_running(self, record: coord.CoordinatorRecord) -> bool:
        """On this machine: the same process. On a node: it answers with our key (an HTTP round trip, cheaper
        than SSH; another process on a reused port would not know the key)."""
        if record.node is None:
            return coord.alive(record)
        try:
            await self._client(record).openai_json("/v1/models")
        except BackendError:
            return False
        return True

    async def _ensure(self, model: Model, trace: Trace) -> coord.CoordinatorRecord:
        state_dir = self.home
        await self.expire()
        record = coord.load_record(state_dir, model.name)
        if record is not None and record.node != model.coordinator:
            trace.notes.append(f"moved the coordinator off {record.where} (the manifest says {_where(model)})")
            await self._stop(record)
            record = None
        if record is not None:
            if await self._still_running(record):
                trace.notes.append(
                    f"reused the running coordinator{record.on_node} (pid {record.pid}, port {record.port})"
                )
                trace.notes.extend(record.placement)
                return record
            trace.notes.append(f"the previous coordinator had exited: {coord.last_lines(await self._log(record), 2)}")
            await self._stop(record)
        await self._evict_others(model, trace)
        host = self.host_for(model.coordinator)
        plan = await self.plan(model, host)
        record = await host.start(plan, self._llama_server(), model.keep_alive)
        record.rpc_memory = self._rpc_memory_at_plan
        record.n_layer = self._n_layer(model)
        record.split = list(plan.split or ())
        coord.save_record(state_dir, record)
        self.started.add(model.name)
        try:
            record.ready_after_s = await coord.wait_ready(
                record, host, timeout=self.ready_timeout, reporter=self.reporter
            )
        except BaseException:
            await self._stop(record)
            raise
        record.placement = placement_lines(record, await host.log_text(record))
        coord.save_record(state_dir, record)
        if not self.stop_on_close:  # left warm after this command: something must stop it when idle
            from sollol_cli.sharding import watchdog

            watchdog.spawn(self.cluster, self.settings, record)
        trace.notes.append(
            f"started a coordinator{record.on_node} (pid {record.pid}), loaded in {record.ready_after_s:.1f} s"
        )
        trace.notes.extend(record.placement)
        return record

    async def _evict_others(self, model: Model, trace: Trace) -> None:
        """An rpc-server serves one coordinator at a time, so switching sharded models means unloading the
        other one first (as Ollama unloads a model to load another when memory is short)."""
        if self.monitor is None:
            return
        ours = {v.spec.ref.address for v in self.monitor.views.values() if v.spec.ref.kind == "rpc"}
        for other in coord.all_records(self.home):
            if other.model != model.name and ours & set(other.rpc) and await self._still_running(other):
                await self._stop(other)
                trace.notes.append(f"unloaded '{other.model}' to free the rpc-servers (they serve one model at a time)")

    async def plan(self, model: Model, host: CoordinatorHost | None = None) -> coord.CoordinatorPlan:
        """Probe the rpc backends now and decide which ones the coordinator uses."""
        from sollol_cli.llamacpp.sdist import RPC_PROTOCOL_VERSION

        if self.monitor is None:
            raise BackendError("internal: no monitor attached to the shard manager")
        if model.store_node and model.name not in self._files:
            await self._fetch_from_node(model)
        file = self.model_file(model)
        rpc_views = [v for v in self.monitor.views.values() if v.spec.ref.kind == "rpc"]
        await asyncio.gather(*(self.monitor.probe_one(v) for v in rpc_views))
        expected = self.cluster.llama_cpp.protocol or ".".join(map(str, RPC_PROTOCOL_VERSION))
        ready, unusable = [], []
        for view in rpc_views:
            probe = view.rpc
            if probe is None or probe.state != "ready":
                state = "busy (another coordinator is attached)" if probe and probe.state == "busy" else "down"
                unusable.append(f"{view.name} ({view.spec.ref.address}) is {state}")
                continue
            version = ".".join(map(str, probe.protocol)) if probe.protocol else "?"
            if version != expected:
                raise BackendError(
                    f"rpc backend {view.name} ({view.spec.ref.address}) speaks protocol {version}, "
                    f"the coordinator's llama.cpp speaks {expected}",
                    hint="run the same llama.cpp build on every node (sollol up uploads it)",
                )
            ready.append(view)
        if not ready:
            why = "; ".join(unusable) or "none configured"
            raise NoHealthyBackend(f"model '{model.name}' needs sharding but no rpc backend is ready: {why}")
        need = file.size + (file.kv_bytes or 0)
        have = _pool_bytes(ready)
        if unusable and have is not None and have < need:
            raise NoHealthyBackend(
                f"model '{model.name}' needs {need / 2**30:.1f} GiB but the ready rpc backends have "
                f"{have / 2**30:.1f} GiB; missing: {'; '.join(unusable)}"
            )
        from sollol_cli.placement import RpcMemory, split_for

        memory = [
            RpcMemory(v.name, v.spec.machine, sum(d.free for d in v.rpc.devices) if v.rpc and v.rpc.devices else None)
            for v in ready
        ]
        override = model.tensor_split if model.tensor_split and len(model.tensor_split) == len(ready) else None
        # Always an explicit split: llama.cpp's default follows free memory at load time, which would make
        # the layer placement unpredictable; with -ts it is computed exactly (placement_log.assign_layers).
        split = tuple(round(share, 4) for share in split_for(memory, override))
        endpoints = tuple(f"{v.spec.ref.host}:{v.spec.ref.port}" for v in ready)
        self._rpc_memory_at_plan = {
            endpoint: [sum(d.free for d in v.rpc.devices), sum(d.total for d in v.rpc.devices)]
            for endpoint, v in zip(endpoints, ready, strict=True)
            if v.rpc is not None and v.rpc.devices
        }
        host = host or self.host_for(model.coordinator)
        gguf = await host.model_path(file)
        bind = self.cluster.node(model.coordinator).host if model.coordinator else "127.0.0.1"
        flags = tuple(pooling_flags(model.embeddings, model.pooling))
        return coord.CoordinatorPlan(model.name, gguf, endpoints, model.context, model.slots, split, bind, flags)

    def _llama_server(self) -> str:
        if self.settings.llama_server_path:
            return str(self.settings.llama_server_path)
        if self.cluster.llama_cpp.bin_dir:
            return str(Path(self.cluster.llama_cpp.bin_dir).expanduser() / "llama-server")
        from sollol_cli.llamacpp.build import resolve_binaries

        binaries = resolve_binaries(self.settings)
        if binaries is None:
            raise UsageError("sharding needs llama-server on the controller", hint="run `sollol llama-cpp build`")
        return str(binaries.llama_server)

    async def expire(self) -> list[str]:
        """Stop coordinators idle for longer than their keep-alive. Idle is asked of the coordinator itself
        (its slots): another sollol process may be using it right now."""
        stopped = []
        now = time.time()
        for record in coord.all_records(self.home):
            if record.node is None and not coord.alive(record):
                coord.forget_record(self.home, record.model)
            elif now - record.last_used > record.keep_alive:
                if await self._busy(record):
                    record.last_used = now
                    coord.save_record(self.home, record)
                    continue
                await self._stop(record)
                stopped.append(record.model)
        return stopped

    async def _busy(self, record: coord.CoordinatorRecord) -> bool:
        return bool((await self._client(record).probe()).in_flight)

    def _client(self, record: coord.CoordinatorRecord) -> LlamaServerBackend:
        """The coordinator as a backend, with short timeouts: for the checks sollol makes, not for requests."""
        from sollol_cli.backends.http import Timeouts
        from sollol_cli.backends.llamacpp import LlamaServerBackend

        return LlamaServerBackend(coord.backend_ref(record), Timeouts(self.cluster.routing.connect_timeout, 5.0))

    async def close(self) -> None:
        try:
            if self.stop_on_close:
                for name in sorted(self.started):
                    record = coord.load_record(self.home, name)
                    if record is not None:
                        await self._stop(record)
        finally:
            for host in self._hosts.values():
                await host.close()
            self._hosts.clear()


def _pool_bytes(views: list) -> int | None:  # type: ignore[type-arg]
    by_machine: dict[str, int] = {}
    for view in views:
        free = sum(d.free for d in view.rpc.devices) if view.rpc and view.rpc.devices else None
        if free is None:
            return None
        by_machine[view.spec.machine] = max(by_machine.get(view.spec.machine, 0), free)
    return sum(by_machine.values())


def _timeouts(cluster: Cluster):  # type: ignore[no-untyped-def]
    from sollol_cli.backends.http import Timeouts

    return Timeouts(connect=cluster.routing.connect_timeout, read=cluster.routing.read_timeout)


def placement_lines(record: coord.CoordinatorRecord, log: str) -> list[str]:
    """`host:port: layers 0-4, model 9.4 MiB, KV 1.2 MiB` per rpc backend (what `-v` and status show)."""
    from sollol_cli.sharding.placement_log import layers_by_device, parse_placement

    mib = parse_placement(log)
    layers = layers_by_device(record.n_layer, record.rpc, record.split) if record.n_layer and record.split else {}
    lines = []
    for endpoint in record.rpc:
        entry = mib.get(endpoint)
        assigned = layers.get(endpoint, [])
        span = f"{assigned[0]}-{assigned[-1]}" if assigned else "-"
        model_mib, kv_mib = (entry.model_mib, entry.kv_mib) if entry else (0.0, 0.0)
        lines.append(f"placement {endpoint}: layers {span}, model {model_mib:.1f} MiB, KV {kv_mib:.1f} MiB")
    local = mib.get("CPU_Mapped") or mib.get("CPU")
    if local is not None and local.model_mib:
        lines.append(f"placement coordinator ({record.where}): token embeddings, model {local.model_mib:.1f} MiB")
    return lines


def _where(model: Model) -> str:
    return f"node {model.coordinator}" if model.coordinator else "this machine"


def coordinator_home(settings: Settings, cluster: str) -> Path:
    return settings.state_dir / "clusters" / cluster


def stop_all(settings: Settings, cluster: str) -> list[str]:
    """`sollol down`: stop every coordinator this cluster's commands started on this machine, and forget
    those on nodes (each node's own `down` stopped them, by the pidfile they left there)."""
    home = coordinator_home(settings, cluster)
    stopped = []
    for record in coord.all_records(home):
        if record.node is None and coord.stop_process(record):
            stopped.append(record.model)
        coord.forget_record(home, record.model)
    return stopped


@asynccontextmanager
async def sharded_models(
    cluster: Cluster, settings: Settings, *, reporter: events.Reporter = events.ignore, stop_on_close: bool = False
) -> AsyncIterator[ShardManager | None]:
    """A shard manager when the cluster can shard (it has rpc backends), else None."""
    has_rpc = any(n.rpc for n in cluster.nodes) or any(b.kind.value == "rpc" for b in cluster.backends)
    if not has_rpc:
        yield None
        return
    manager = ShardManager(cluster, settings, reporter=reporter, stop_on_close=stop_on_close)
    try:
        yield manager
    finally:
        await manager.close()
