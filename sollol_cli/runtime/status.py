"""`sollol status` as data: one row per backend, from fresh concurrent probes and the state `up` recorded."""

from __future__ import annotations

from typing import Any

from sollol_cli.runtime.monitor import BackendView, Monitor
from sollol_cli.state import ClusterState


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
        "error": view.last_error,
    }
    if ref.kind == "rpc":
        probe = view.rpc
        if probe is not None:
            row["reachable"] = {"ready": "yes", "busy": "busy"}.get(probe.state, "no")
            if probe.protocol:
                row["version"] = "rpc " + ".".join(map(str, probe.protocol))
            if probe.devices:
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


def status_data(monitor: Monitor, state: ClusterState, cluster_name: str) -> dict[str, Any]:
    rows = backend_rows(monitor, state)
    up = sum(1 for r in rows if r["reachable"] in ("yes", "busy"))
    return {"cluster": cluster_name, "backends": rows, "reachable": up, "total": len(rows)}
