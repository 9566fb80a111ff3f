"""`sollol status` as data: one row per backend, from fresh concurrent probes and the state `up` recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sollol_cli.errors import PartialFailure, SollolError, UnreachableError
from sollol_cli.names import same_model
from sollol_cli.runtime.bench_results import BenchRow
from sollol_cli.runtime.monitor import BackendView, Monitor, rpc_server
from sollol_cli.state import ClusterState, NodeState

if TYPE_CHECKING:
    from sollol_cli.manifest.models import Cluster
    from sollol_cli.runtime.session import ClusterRuntime
    from sollol_cli.sharding.coordinator import CoordinatorRecord
    from sollol_cli.sharding.manager import ShardManager


def backend_rows(monitor: Monitor, state: ClusterState) -> list[dict[str, Any]]:
    rows = []
    for view in monitor.views.values():
        rows.append(_row(view, state))
    return rows


def _row(view: BackendView, state: ClusterState) -> dict[str, Any]:
    ref = view.spec.ref
    node_state = state.nodes.get(ref.node) if ref.node else None
    row: dict[str, Any] = {
        "name": view.name,
        "node": ref.node,
        "kind": ref.kind,
        "address": ref.address,
        "managed": view.spec.managed,
        "reachable": "no",
        "version": None,
        "models": [],
        "loaded": [],
        "slots": None,
        "in_flight": None,
        "free_bytes": None,
        "total_bytes": None,
        "rpc_devices": [],
        "accelerators": [a.model_dump() for a in node_state.accelerators] if node_state else [],
        "vulkan_loader": node_state.vulkan_loader if node_state else None,
        # the llama.cpp build `up` put on the node (its rpc-server and llama-server run it)
        "llama_backend": node_state.llama_backend if node_state and ref.kind != "ollama" else None,
        "llama_build": node_state.llama_build if node_state and ref.kind != "ollama" else None,
        "error": view.last_error,
    }
    if ref.kind == "rpc":
        probe = view.rpc
        if probe is not None:
            row["reachable"] = {"ready": "yes", "busy": "busy"}.get(probe.state, "no")
            if probe.protocol:
                row["version"] = "rpc " + ".".join(map(str, probe.protocol))
            if probe.devices:
                row["rpc_devices"] = rpc_device_rows(view, node_state)
                row["free_bytes"] = sum(d.free for d in probe.devices)
                row["total_bytes"] = sum(d.total for d in probe.devices)
            if probe.state == "busy":
                row["error"] = probe.error or "a coordinator is attached (rpc-server serves one client at a time)"
    elif view.status is not None:
        status = view.status
        row["reachable"] = "yes" if status.ready else ("loading" if status.reachable else "no")
        row["version"] = status.version
        row["models"] = [m.name for m in status.models]
        row["loaded"] = list(status.loaded)
        row["slots"] = status.slots
        row["in_flight"] = status.in_flight
    if row["free_bytes"] is None and node_state is not None:
        row["free_bytes"] = node_state.mem_available_bytes
        row["total_bytes"] = node_state.mem_total_bytes
    return row


def rpc_device_rows(view: BackendView, node_state: NodeState | None) -> list[dict[str, Any]]:
    """The devices an rpc-server serves (the protocol's DEVICE_COUNT and GET_DEVICE_MEMORY), each with its
    memory, its name when the manifest gives it (the protocol does not), and whether it holds layers in its
    own memory (`gpu`) or the machine's RAM (`cpu`); `label` keys it in the placement lines."""
    return [
        {
            "index": d.index,
            "label": d.label,
            "name": d.name,
            "kind": d.kind,
            "free_bytes": d.free,
            "total_bytes": d.total,
        }
        for d in rpc_server(view).devices(node_state)
    ]


def status_data(monitor: Monitor, state: ClusterState, cluster_name: str) -> dict[str, Any]:
    rows = backend_rows(monitor, state)
    up = sum(1 for r in rows if r["reachable"] in ("yes", "busy"))
    return {"cluster": cluster_name, "backends": rows, "reachable": up, "total": len(rows)}


async def live_status(runtime: ClusterRuntime) -> tuple[dict[str, Any], dict[str, Any]]:
    """A long-lived runtime's view (`serve`'s /sollol/status, the Python API's `status()`): the data of
    `sollol status` from its own health loop, and its load now (requests in flight and queued, what is loaded
    where)."""
    from sollol_cli.runtime.catalog import running_models
    from sollol_cli.state import load_state

    cluster = runtime.cluster
    data = status_data(runtime.monitor, load_state(runtime.settings.state_dir, cluster.name), cluster.name)
    load = {
        "in_flight": sum(v.in_flight for v in runtime.monitor.views.values()),
        "queue_depth": runtime.dispatcher.waiting,
        "loaded": await running_models(runtime),
    }
    return data, load


def status_failure(data: Mapping[str, Any]) -> SollolError | None:
    """What `sollol status` raises once the table is shown: none answered, some did not, or None."""
    reachable, total, cluster = data["reachable"], data["total"], data["cluster"]
    if total and reachable == 0:
        return UnreachableError(f"none of the {total} backends of '{cluster}' answered", reported=True)
    if reachable != total:
        return PartialFailure(f"{total - reachable} of {total} backends of '{cluster}' did not answer", reported=True)
    return None


def model_rows(
    cluster: Cluster, shards: ShardManager | None, running: Mapping[str, CoordinatorRecord]
) -> list[dict[str, Any]]:
    """Per manifest model: distribute or shard and why, and where a running coordinator put its layers and how
    fast it is expected to run and ran."""
    from sollol_cli.sharding.lifecycle import speed_line, speed_of

    rows = []
    for model in cluster.models:
        if shards is None:
            mode, reason = False, "distribute: the cluster has no rpc backends to shard over"
        else:
            mode, reason = shards.handles(model.name)
        record = running.get(model.name)
        rows.append(
            {
                "name": model.name,
                "mode": "shard" if mode else "distribute",
                "reason": reason,
                "coordinator": None
                if record is None
                else {"pid": record.pid, "host": record.host, "port": record.port, "node": record.node},
                "placement": [*record.placement, speed_line(record)] if record is not None else [],
                "speed": speed_of(record) if record is not None else None,
            }
        )
    return rows


async def cluster_status(runtime: ClusterRuntime, wall: float) -> dict[str, Any]:
    """What `sollol status` shows: every backend (`status_data`), every manifest model with its decision and
    coordinator, and what `sollol bench` measured (as old as it is; `wall` is the time now)."""
    from sollol_cli.state import load_state

    cluster = runtime.cluster
    data = status_data(runtime.monitor, load_state(runtime.settings.state_dir, cluster.name), cluster.name)
    data["models"] = model_rows(cluster, runtime.shards, await runtime.running_coordinators())
    data["measured"] = measured_rows(runtime.bench_rows, wall)
    return data


def measured_rows(rows: Sequence[BenchRow], wall: float) -> list[dict[str, Any]]:
    """Per model and backend, one request's speed as `sollol bench` measured it, and how long ago."""
    return [
        {
            "model": r.model,
            "backend": r.backend,
            "mode": r.mode,
            "ttft_s": r.single.ttft_s,
            "tokens_per_s": r.single.tokens_per_s,
            "age_s": round(max(0.0, wall - r.measured_at), 1),
        }
        for r in rows
    ]


def dashboard_status(runtime: ClusterRuntime) -> dict[str, Any]:
    """What the dashboard shows after each probe round and finished request: the rows of `status_data` with
    the monitor's own view of each backend (state, breaker, slots in use, last probe), the load, and the
    models with their coordinators and layer placement. Cheap enough for that: it reads the monitor, the state
    file and the coordinator records, and asks no backend anything."""
    import time

    from sollol_cli.sharding import coordinator as coord
    from sollol_cli.sharding.lifecycle import coordinator_home, parse_placement_lines
    from sollol_cli.state import load_state

    cluster, monitor = runtime.cluster, runtime.monitor
    data = status_data(monitor, load_state(runtime.settings.state_dir, cluster.name), cluster.name)
    now = monitor.clock()
    for row, view in zip(data["backends"], monitor.views.values(), strict=True):
        row["state"] = _STATE.get(row["reachable"], "down")
        row["breaker"] = monitor.breaker.phase(view.breaker, now).value
        row["served"] = view.served
        if view.client is not None:
            row["slots"] = view.slots
            row["in_use"] = view.in_flight + view.others_in_flight
        row["probed_s_ago"] = None if view.probed_at is None else round(max(0.0, now - view.probed_at), 3)
    home = coordinator_home(runtime.settings, cluster.name)
    running = {record.model: record for record in coord.all_records(home) if coord.alive(record)}
    models = model_rows(cluster, runtime.shards, running)
    models += _unlisted_models(monitor, {row["name"] for row in models})
    for row in models:
        row["backends"] = sorted(
            v.name for v in monitor.views.values() if any(same_model(m, row["name"]) for m in v.models)
        )
        row["loaded_on"] = sorted(
            v.name for v in monitor.views.values() if any(same_model(m, row["name"]) for m in v.loaded)
        )
        row["queued"] = sum(n for m, n in runtime.dispatcher.waiting_by_model.items() if same_model(m, row["name"]))
        record = running.get(row["name"])
        parts = parse_placement_lines(record.placement) if record is not None else []
        row["placement_text"] = row["placement"]
        row["placement"] = [part.as_json() for part in parts]
        if record is not None:
            expires = coord.expires_at(record)
            row["coordinator"] |= {
                "state": "loading" if record.ready_after_s is None else "ready",
                "rpc": list(record.rpc),
                "n_layer": record.n_layer,
                "last_used": record.last_used,
                "unloads_at": expires,
            }
            if record.ready_after_s is None:  # loading (in this process or another): for how long, and the limit
                limit = runtime.shards.ready_timeout if runtime.shards is not None else None
                row["coordinator"] |= {"loading_s": round(max(0.0, time.time() - record.started_at), 1),
                                       "load_limit_s": limit}  # fmt: skip
    data |= {
        "time": time.time(),
        "probe_interval_s": cluster.routing.probe_interval,
        "models": models,
        "gateway": {
            "in_flight": sum(v.in_flight for v in monitor.views.values()),
            "queue_depth": runtime.dispatcher.waiting,
        },
    }
    return data


_STATE = {"yes": "up", "busy": "busy", "loading": "loading"}


def _unlisted_models(monitor: Monitor, listed: set[str]) -> list[dict[str, Any]]:
    """Models the backends have that the manifest's `models` does not name: routed to whichever has them."""
    from sollol_cli.sharding.decision import NOT_IN_MANIFEST

    seen: set[str] = set()
    for view in monitor.views.values():
        seen.update(view.models)
    return [
        {
            "name": name,
            "mode": "distribute",
            "reason": NOT_IN_MANIFEST,
            "coordinator": None,
            "placement": [],
            "speed": None,
        }
        for name in sorted(seen)
        if not any(same_model(name, other) for other in listed)
    ]
