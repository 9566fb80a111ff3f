"""`up` and `down` for a whole cluster: binaries, nodes in parallel, protocol check, state file."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sollol_cli import events
from sollol_cli.errors import PartialFailure, SollolError, UnreachableError, UsageError
from sollol_cli.llamacpp.build import sha256_file
from sollol_cli.manifest.loader import LoadedManifest
from sollol_cli.manifest.models import Cluster, LlamaCpp
from sollol_cli.provision.apply import DEFAULT_OPTIONS, NodeOutcome, Options, check_protocols, run_nodes
from sollol_cli.provision.connect import runner_factory
from sollol_cli.provision.nodebuild import SourceTarball
from sollol_cli.provision.services import ALL_BACKENDS, Builds, LocalBuild, build_sources
from sollol_cli.settings import Settings
from sollol_cli.state import NodeState, ServiceState, check_state_path, load_state, save_state

# Stops the sharded models' coordinators that this cluster's commands started on the controller (and forgets
# those on nodes, which each node's `down` stops by their pidfiles); returns the models stopped. Sharding owns
# them: the caller passes sharding's stop_all, so provisioning needs no import of sharding.
StopCoordinators = Callable[[events.Reporter], list[str]]


@dataclass(frozen=True)
class ClusterOutcome:
    action: Literal["up", "down"]
    nodes: list[NodeOutcome]
    dry_run: bool

    @property
    def failure(self) -> SollolError | None:
        """What the command raises once it has shown the per-node results (None: every node did its part)."""
        bad = [n for n in self.nodes if n.status in ("failed", "unreachable")]
        if not bad:
            return None
        if all(n.status == "unreachable" for n in self.nodes):
            return UnreachableError(f"`{self.action}` reached none of the {len(self.nodes)} nodes", reported=True)
        return PartialFailure(f"`{self.action}` failed on {len(bad)} of {len(self.nodes)} nodes", reported=True)

    @property
    def exit_code(self) -> int:
        return self.failure.exit_code if self.failure else 0


def node_builds(cluster: Cluster, settings: Settings) -> dict[str, Builds]:
    """Per node, the builds `up` can put there from the controller: the node's own bin_dir/node_bin_dir, else
    the cluster's, else sollol's cached builds; none for a node that builds its own or runs no llama.cpp."""
    per_node: dict[str, Builds] = {}
    found: dict[tuple[str | None, str | None], Builds] = {}  # the same directories are looked at once
    for node in cluster.nodes:
        llama = cluster.llama_cpp.for_node(node)
        if (node.rpc is None and node.llamacpp is None) or cluster.builds_on_node(node):
            per_node[node.name] = {}
            continue
        where = (llama.bin_dir, llama.node_bin_dir)
        if where not in found:
            found[where] = build_sources(llama, controller_builds(llama, settings))
        per_node[node.name] = found[where]
    return per_node


def node_source(cluster: Cluster, settings: Settings) -> SourceTarball | None:
    """The pinned sources for the nodes that build their own binaries (None when none does)."""
    if not any(cluster.builds_on_node(node) for node in cluster.nodes):
        return None
    from sollol_cli.llamacpp.sdist import ensure_sdist

    tarball = ensure_sdist(settings.cache_dir)
    return SourceTarball(tarball, sha256_file(tarball))


def controller_builds(llama: LlamaCpp, settings: Settings) -> dict[str, LocalBuild]:
    """Builds to upload, per backend: `bin_dir` (for every backend), else settings overrides / sollol's cached
    CPU build and its cached Vulkan build, whichever exist. `llama`: the settings of the node(s) concerned."""
    if llama.node_bin_dir:
        return {}
    if llama.bin_dir:
        base = Path(llama.bin_dir).expanduser()
        found = {}
        for name in ("rpc-server", "llama-server"):
            path = base / name
            if not path.is_file():
                raise UsageError(
                    f"llama_cpp.bin_dir: {path} does not exist",
                    hint="point it at a directory with rpc-server and llama-server",
                )
            found[name] = (str(path.resolve()), sha256_file(path))  # resolved: upload the file, not a symlink
        user = LocalBuild(found, "bin_dir", user=True)
        return dict.fromkeys(ALL_BACKENDS, user)
    from sollol_cli.llamacpp.build import find_build, resolve_binaries

    builds: dict[str, LocalBuild] = {}
    cached = {"cpu": resolve_binaries(settings), "vulkan": find_build(settings.cache_dir, "vulkan")}
    for backend, binaries in cached.items():
        if binaries is not None:
            files = {
                "rpc-server": (str(binaries.rpc_server.resolve()), binaries.sha256["rpc-server"]),
                "llama-server": (str(binaries.llama_server.resolve()), binaries.sha256["llama-server"]),
            }
            builds[backend] = LocalBuild(files, f"{backend} {binaries.version}")
    if not builds:
        raise UsageError(
            "no llama.cpp binaries to put on the nodes",
            hint="run `sollol llama-cpp build` once, or set llama_cpp.bin_dir or llama_cpp.node_bin_dir",
        )
    return builds


def expected_protocol(cluster: Cluster) -> str:
    from sollol_cli.llamacpp.sdist import RPC_PROTOCOL_VERSION

    return cluster.llama_cpp.protocol or ".".join(map(str, RPC_PROTOCOL_VERSION))


async def provision(
    loaded: LoadedManifest,
    action: Literal["up", "down"],
    settings: Settings,
    *,
    reporter: events.Reporter = events.ignore,
    options: Options = DEFAULT_OPTIONS,
    only: list[str] | None = None,
    stop_coordinators: StopCoordinators | None = None,
) -> ClusterOutcome:
    """`up` or `down` every node (or `only` these); a whole-cluster `down` also calls `stop_coordinators`."""
    cluster = loaded.cluster
    if not options.dry_run:
        check_state_path(settings.state_dir, cluster.name)  # before any work: `record` writes it at the end
    builds = node_builds(cluster, settings) if action == "up" else {}
    source = node_source(cluster, settings) if action == "up" and not options.dry_run else None
    try:
        outcomes = await run_nodes(
            cluster, action, connect=runner_factory(cluster, settings), builds=builds,
            reporter=reporter, options=options, only=only, source=source,
        )  # fmt: skip
    finally:
        from sollol_cli.backends.http import close_session

        await close_session()
    if action == "up" and not options.dry_run:
        check_protocols(outcomes, expected_protocol(cluster))
    if action == "down" and not options.dry_run and only is None and stop_coordinators is not None:
        for model in stop_coordinators(reporter):
            reporter(events.StepDone("controller", "stop", f"coordinator for {model}"))
    if not options.dry_run:
        record(loaded, outcomes, settings, action)
    return ClusterOutcome(action, outcomes, options.dry_run)


def record(loaded: LoadedManifest, outcomes: list[NodeOutcome], settings: Settings, action: str) -> None:
    """Mirror what runs where into the local state file (the nodes' pidfiles stay authoritative)."""
    cluster = loaded.cluster
    state = load_state(settings.state_dir, cluster.name)
    state.manifest, state.manifest_sha256 = str(loaded.path.resolve()), loaded.sha256
    for outcome in outcomes:
        if outcome.status == "unreachable" or outcome.facts is None:
            continue
        node = cluster.node(outcome.node)
        entry = state.nodes.get(outcome.node) or NodeState(address=node.address)
        entry.address = node.address
        facts = outcome.facts
        entry.os, entry.arch = facts.os, facts.arch
        entry.mem_total_bytes, entry.mem_available_bytes = facts.mem_total_bytes, facts.mem_available_bytes
        entry.accelerators, entry.vulkan_loader = list(facts.accelerators), facts.vulkan_loader
        entry.render_nodes = list(facts.render_nodes)
        entry.llama_backend, entry.llama_build = (outcome.backend, outcome.build) if action == "up" else (None, None)
        entry.services = (
            {}
            if action == "down"
            else {
                s.name: ServiceState(
                    name=s.name,
                    kind=s.kind,
                    host=s.host,
                    port=s.port,
                    digest=s.digest,
                    manager=s.manager,
                    pid=s.pid,
                    start_time=s.start_time,
                    version=s.version,
                )  # fmt: skip
                for s in outcome.services
            }
        )
        entry.updated_at = time.time()
        state.nodes[outcome.node] = entry
    save_state(settings.state_dir, state)
