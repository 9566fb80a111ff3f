"""Outcomes of `up`/`down` as plain data (for --json, the summary table and exact-output tests)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sollol_cli.provision.cluster import ClusterOutcome
from sollol_cli.provision.plan import describe


def outcome_data(outcome: ClusterOutcome) -> dict[str, Any]:
    nodes = []
    for node in outcome.nodes:
        nodes.append(
            {
                "node": node.node,
                "status": node.status,
                "plan": [describe(step) for step in node.plan.steps] if node.plan else [],
                "changes": node.changed,
                "failures": node.failures,
                "services": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "address": f"{s.host}:{s.port}",
                        "manager": s.manager,
                        "pid": s.pid,
                        "version": s.version,
                        "ready": s.ready,
                    }  # fmt: skip
                    for s in node.services
                ],
            }
        )
    counts = Counter(node.status for node in outcome.nodes)
    # services this run started without systemd: nothing brings them back after the node reboots
    transient = [n.node for n in outcome.nodes if any(s.started and s.manager == "process" for s in n.services)]
    return {
        "action": outcome.action,
        "dry_run": outcome.dry_run,
        "nodes": nodes,
        "summary": {k: counts.get(k, 0) for k in ("changed", "unchanged", "failed", "unreachable", "planned")},
        "exit_code": outcome.exit_code,
        "not_persistent": transient,
    }


def summary_line(data: dict[str, Any]) -> str:
    """`3 nodes unchanged`, `3 nodes: 1 changed, 1 unchanged, 1 failed`."""
    total = len(data["nodes"])
    noun = "node" if total == 1 else "nodes"
    parts = [(k, v) for k, v in data["summary"].items() if v]
    if len(parts) == 1:
        return f"{total} {noun} {parts[0][0]}"
    return f"{total} {noun}: " + ", ".join(f"{v} {k}" for k, v in parts)


def persistence_note(data: dict[str, Any]) -> str | None:
    """One line when `up` started services that a reboot of their node will not bring back."""
    nodes = data.get("not_persistent") or []
    if not nodes:
        return None
    return (
        f"note: the services started on {', '.join(nodes)} run without systemd and will not survive a reboot; "
        "run `sollol up` again after one"
    )
