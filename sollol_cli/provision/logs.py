"""`sollol logs`: the log of a service sollol started on a node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from sollol_cli.errors import UsageError
from sollol_cli.manifest.models import Cluster, Node
from sollol_cli.provision.services import node_services
from sollol_cli.settings import Settings
from sollol_cli.ssh.nodeproc import coordinator_name, log_path, shell_word


def log_file(cluster: Cluster, node_name: str, role: str | None) -> tuple[Node, str]:
    """The node and the log path of its `role` service (the only role when there is one), or of the
    coordinator of a sharded model that runs there (`coordinator` or `coordinator:MODEL`)."""
    names = [n.name for n in cluster.nodes]
    if node_name not in names:
        import difflib

        close = difflib.get_close_matches(node_name, names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"nodes: {', '.join(names) or 'none'}"
        raise UsageError(f"no node named '{node_name}' in the manifest", hint=hint)
    node = cluster.node(node_name)
    if role is not None and role.split(":", 1)[0] == "coordinator":
        return node, _coordinator_log(cluster, node, role.partition(":")[2])
    if role == BUILD_ROLE:
        if not cluster.builds_on_node(node):
            raise UsageError(
                f"node '{node_name}' does not build llama.cpp itself",
                hint="its build log exists with `llama_cpp: {build: node}` in the node's or the cluster's manifest",
            )
        return node, log_path(cluster.name, node.name, BUILD_ROLE)
    roles = node.roles
    if not roles:
        raise UsageError(f"node '{node_name}' has no roles, so sollol runs nothing there")
    if role is None:
        if len(roles) > 1:
            raise UsageError(f"node '{node_name}' runs {', '.join(roles)}", hint="name one: sollol logs NODE ROLE")
        role = roles[0]
    if role not in roles:
        raise UsageError(f"node '{node_name}' has no '{role}' role", hint=f"it has: {', '.join(roles)}")
    spec = next(s for s in node_services(cluster.name, node, {}) if s.kind == role)
    return node, log_path(cluster.name, node.name, spec.name)


BUILD_ROLE = "build"  # the log of the llama.cpp build on the node (`llama_cpp.build: node`)


def _coordinator_log(cluster: Cluster, node: Node, model: str) -> str:
    here = [m.name for m in cluster.models if m.coordinator == node.name]
    if not here:
        raise UsageError(f"no model runs its coordinator on node '{node.name}'", hint="see models[].coordinator")
    if not model:
        if len(here) > 1:
            raise UsageError(
                f"node '{node.name}' coordinates {', '.join(here)}",
                hint=f"name one: sollol logs {node.name} coordinator:MODEL",
            )
        model = here[0]
    if model not in here:
        raise UsageError(
            f"model '{model}' does not run its coordinator on node '{node.name}'", hint=f"it runs: {', '.join(here)}"
        )
    return log_path(cluster.name, node.name, coordinator_name(cluster.name, model))


async def read_log(
    cluster: Cluster, settings: Settings, node_name: str, role: str | None, *, lines: int, follow: bool
) -> AsyncIterator[str]:
    from sollol_cli.provision.connect import runner_factory

    node, path = log_file(cluster, node_name, role)
    runner = await runner_factory(cluster, settings)(node)
    async with runner:
        word = shell_word(path)
        if follow:
            async for chunk in runner.stream(f"tail -n {lines} -F {word} 2>/dev/null"):
                yield chunk
            return
        result = await runner.run(f"[ -f {word} ] && tail -n {lines} {word}", timeout=30)
        if result.exit_status != 0:
            raise UsageError(f"no log at {path} on {node_name}", hint="has sollol started this service yet?")
        yield result.stdout


@dataclass(frozen=True)
class LogSource:
    """A log `sollol logs` (or the dashboard) can show: a node's service or a sharded model's coordinator."""

    node: str
    role: str  # rpc, ollama, llamacpp, build or coordinator:MODEL

    def as_json(self) -> dict[str, str]:
        return {"node": self.node, "role": self.role}


def log_sources(cluster: Cluster) -> list[LogSource]:
    """Every service `up` starts on the nodes, and every coordinator the manifest puts on a node."""
    out = []
    for node in cluster.nodes:
        out += [LogSource(node.name, role) for role in node.roles]
        out += [LogSource(node.name, BUILD_ROLE)] if cluster.builds_on_node(node) else []
        out += [LogSource(node.name, f"coordinator:{m.name}") for m in cluster.models if m.coordinator == node.name]
    return out


async def follow_local_log(path: str, *, lines: int) -> AsyncIterator[str]:
    """A log on this machine (a coordinator the controller runs), as `tail -F` follows it."""
    from sollol_cli.ssh.runner import LocalRunner

    async for chunk in LocalRunner().stream(f"tail -n {lines} -F {shell_word(path)} 2>/dev/null"):
        yield chunk
