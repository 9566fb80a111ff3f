"""What `sollol validate` reports about a valid manifest, and the warnings it deserves."""

from __future__ import annotations

from typing import Any

from sollol_cli.manifest.models import Cluster, HostKeyPolicy

UNSAFE_BINDS = {"0.0.0.0", "::"}


def warnings(cluster: Cluster) -> list[str]:
    """Valid but risky settings; shown on every command that loads the manifest."""
    found: list[str] = []
    if cluster.ssh.host_key_policy is HostKeyPolicy.off:
        found.append(
            "ssh.host_key_policy is 'off': host keys are NOT verified, anyone on the path can impersonate nodes"
        )
    for node in cluster.nodes:
        if node.ssh is not None and node.ssh.host_key_policy is HostKeyPolicy.off:
            found.append(f"{node.name}: host_key_policy 'off': this node's host key is NOT verified")
        if node.rpc is not None and node.rpc.bind in UNSAFE_BINDS:
            found.append(
                f"{node.name}: rpc-server bound to {node.rpc.bind}: it has no authentication; "
                "anyone who can reach the port can run code on the node"
            )
    if cluster.gateway.host in UNSAFE_BINDS and cluster.gateway.api_key_env is None:
        found.append("gateway binds all addresses without an API key (set gateway.api_key_env)")
    return found


def summary(cluster: Cluster, path: str) -> dict[str, Any]:
    return {
        "manifest": path,
        "cluster": cluster.name,
        "nodes": [
            {
                "name": node.name,
                "address": node.address,
                "transport": "local" if node.is_local else "ssh",
                "roles": {role: getattr(node, role).port for role in node.roles},
            }
            for node in cluster.nodes
        ],
        "backends": [
            {"name": b.label, "kind": b.kind.value, "address": b.address, "port": b.effective_port}
            for b in cluster.backends
        ],
        "models": [
            {
                "name": m.name,
                "mode": m.mode.value,
                "source": m.gguf or f"ollama:{m.ollama_model or m.name}",
                "context": m.context,
            }
            for m in cluster.models
        ],
        "warnings": warnings(cluster),
    }
