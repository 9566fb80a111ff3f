"""The provisioning planner: (desired services, node facts) -> ordered steps, and the shell text each step
runs on the node. Pure, tested as data.

Running `up` twice plans no changes the second time; a changed setting restarts only that service.
"""

from __future__ import annotations

from dataclasses import dataclass

from sollol_cli.llamacpp.nodeplan import BuildRefused, NodeBuildPlan, node_build_plan
from sollol_cli.manifest.models import Cluster, Node
from sollol_cli.provision import services as svc
from sollol_cli.provision.backend_choice import BackendChoice, choose_backend, choose_build
from sollol_cli.provision.facts import NodeFacts, RunningService
from sollol_cli.provision.services import BinarySource, ServiceSpec
from sollol_cli.ssh.nodeproc import run_dir, shell_word, stop_text


@dataclass(frozen=True)
class UseBackend:
    """The llama.cpp build this node's rpc-server and llama-server run (no change by itself: a switch shows as
    the upload and restart it causes)."""

    backend: str
    build: str
    reason: str


@dataclass(frozen=True)
class Upload:
    binary: BinarySource


@dataclass(frozen=True)
class BuildOnNode:
    """Build llama.cpp on the node (`llama_cpp.build: node`): no complete build with this plan's key is there."""

    plan: NodeBuildPlan


@dataclass(frozen=True)
class Stop:
    service: RunningService
    reason: str


@dataclass(frozen=True)
class Forget:
    """A record of a service that is no longer running: remove it."""

    service: RunningService


@dataclass(frozen=True)
class Start:
    spec: ServiceSpec
    manager: str  # process | systemd-system | systemd-user
    reason: str


@dataclass(frozen=True)
class Keep:
    """Running with the wanted settings: only check that it still answers."""

    spec: ServiceSpec
    service: RunningService


@dataclass(frozen=True)
class EnsureModels:
    spec: ServiceSpec
    models: tuple[str, ...]


@dataclass(frozen=True)
class Fail:
    service: str
    reason: str


Step = UseBackend | Upload | BuildOnNode | Stop | Forget | Start | Keep | EnsureModels | Fail
CHANGES = (Upload, BuildOnNode, Stop, Start)

OLLAMA_INSTALL_HINT = "install it on the node: curl -fsSL https://ollama.com/install.sh | sh"


@dataclass(frozen=True)
class NodePlan:
    node: str
    steps: tuple[Step, ...]

    @property
    def changes(self) -> bool:
        return any(isinstance(step, CHANGES) for step in self.steps)

    @property
    def failures(self) -> list[Fail]:
        return [step for step in self.steps if isinstance(step, Fail)]


@dataclass(frozen=True)
class Desired:
    """What `up` wants on a node once its facts are in: the llama.cpp build chosen for it (None: it runs no
    llama.cpp service), that build's binaries and the services."""

    choice: BackendChoice | None
    build: str
    sources: dict[str, BinarySource]
    services: list[ServiceSpec]
    node_build: NodeBuildPlan | None = None  # `llama_cpp.build: node`: how the node builds its binaries


def desired_on(cluster: Cluster, node: Node, builds: svc.Builds, facts: NodeFacts) -> Desired:
    """Choose the node's llama.cpp backend from its facts and the builds there are (or that it can make
    itself, with `llama_cpp.build: node`), then its services."""
    choice, build, sources, node_build = None, "", {}, None
    llama = cluster.llama_cpp.for_node(node)
    if cluster.builds_on_node(node):
        choice, node_build = _built_on_node(node, llama.backend.value, facts, llama.build_environment)
        if node_build is not None:
            build, sources = node_build.label, svc.node_build_sources(node_build)
    elif node.rpc is not None or node.llamacpp is not None:
        requested = llama.backend.value
        choice, build = choose_build(requested, facts.accelerators, facts.vulkan_loader, facts.render_nodes, builds)
        sources = dict(builds.get(choice.backend, {})) if choice.problem is None else {}
    services = svc.node_services(
        cluster.name,
        node,
        sources,
        cpus=facts.cpus,
        rpc_sharing=svc.rpc_servers_on_machine(cluster, node),
        backend=choice.backend if choice is not None else "cpu",
    )
    return Desired(choice, build, sources, services, node_build)


def _built_on_node(
    node: Node, requested: str, facts: NodeFacts, environment: dict[str, str]
) -> tuple[BackendChoice, NodeBuildPlan | None]:
    """The backend for a node that builds its own binaries (any backend it has the device for), and the plan
    of that build; a tool it lacks is the choice's problem, found before anything runs."""
    choice = choose_backend(
        requested, facts.accelerators, facts.vulkan_loader, facts.render_nodes, builds=svc.ALL_BACKENDS
    )
    if choice.problem is not None:
        return choice, None
    names = [svc.BINARY_FOR[kind] for kind in ("rpc", "llamacpp") if getattr(node, kind) is not None]
    plan = node_build_plan(
        choice.backend, names, facts.toolchain, home=facts.home, cpus=facts.cpus, environment=environment
    )
    if isinstance(plan, BuildRefused):
        return BackendChoice(choice.backend, choice.reason, plan.problem), None
    return choice, plan


def manager_for(facts: NodeFacts, preferred: str = "auto") -> str:
    if preferred == "process":
        return "process"
    if facts.systemd in ("system", "user"):
        return f"systemd-{facts.systemd}"
    return "process"


def plan_up(
    node: str,
    desired: list[ServiceSpec],
    sources: dict[str, BinarySource],
    facts: NodeFacts,
    *,
    manager: str = "auto",
    backend: BackendChoice | None = None,
    build: str = "",
    node_build: NodeBuildPlan | None = None,
) -> NodePlan:
    """`backend`: the llama.cpp build chosen for the node (None: it runs no llama.cpp service) and `build`, what
    `sources` are. A backend with a problem fails the node's llama.cpp services with it; the rest goes on.
    `node_build`: the node builds `sources` itself, unless a complete build of that plan is there already."""
    steps: list[Step] = []
    wanted = {spec.name: spec for spec in desired}
    running = facts.services
    if backend is not None:
        steps.append(UseBackend(backend.backend, build, backend.reason))
        if backend.problem is not None:
            llama = [spec for spec in desired if spec.kind in ("rpc", "llamacpp")]
            steps.extend(Fail(spec.name, backend.problem) for spec in llama)
            desired = [spec for spec in desired if spec not in llama]
        elif node_build is not None and node_build.key not in facts.node_builds:
            steps.append(BuildOnNode(node_build))

    for name, service in sorted(running.items()):
        if service.kind == "coordinator" and service.alive:
            continue  # a sharded model's coordinator: the shard manager's to stop (expiry, `down`), not up's
        if name not in wanted:
            steps.append(Stop(service, "no longer in the manifest") if service.alive else Forget(service))

    uploads: dict[str, BinarySource] = {}
    for spec in desired:
        source = sources.get(_binary_name(spec))
        if source is not None and source.build_key is not None:
            continue  # made on the node: the BuildOnNode step (or the build found there) vouches for it
        if (
            source is not None
            and source.local_path is not None
            and facts.binaries.get(source.remote_path) != source.sha256
        ):
            uploads[source.name] = source
        elif source is not None and source.local_path is None and source.remote_path not in facts.binaries:
            steps.append(Fail(spec.name, f"{source.remote_path} does not exist on the node (llama_cpp.node_bin_dir)"))
    steps.extend(Upload(source) for source in uploads.values())

    how = manager_for(facts, manager)
    for spec in desired:
        if spec.kind == "ollama" and facts.ollama_path is None:
            steps.append(
                Fail(spec.name, f"ollama is not installed ('{spec.argv[0]}' not found); {OLLAMA_INSTALL_HINT}")
            )
            continue
        current = running.get(spec.name)
        if current is not None and current.alive and current.digest == spec.digest:
            steps.append(Keep(spec, current))
        else:
            ours = current.pid if current is not None and current.alive else None
            if current is not None and current.alive:
                steps.append(Stop(current, "settings changed"))
            elif current is not None:
                steps.append(Forget(current))
            listener = facts.listener_on(spec.host, spec.port)
            if listener is not None and (listener.pid is None or listener.pid != ours):
                who = f"pid {listener.pid} ({listener.process})" if listener.pid else "another process"
                steps.append(
                    Fail(spec.name, f"port {spec.port} on {spec.host} is in use by {who}; free it or change the port")
                )
                continue
            if spec.kind == "llamacpp" and spec.model_file is not None and spec.model_file not in facts.files:
                steps.append(
                    Fail(spec.name, f"the GGUF {spec.model_file} does not exist on the node; put it there first")
                )
                continue
            reason = "settings changed" if current is not None and current.alive else "not running"
            steps.append(Start(spec, how, reason))
        if spec.models:
            steps.append(EnsureModels(spec, spec.models))
    return NodePlan(node, tuple(steps))


def plan_down(node: str, facts: NodeFacts) -> NodePlan:
    """Stop everything this cluster's `up` started on the node (by its records), nothing else."""
    steps: list[Step] = []
    for _, service in sorted(facts.services.items()):
        steps.append(Stop(service, "sollol down") if service.alive else Forget(service))
    return NodePlan(node, tuple(steps))


def _binary_name(spec: ServiceSpec) -> str:
    return {"rpc": "rpc-server", "llamacpp": "llama-server"}.get(spec.kind, "")


def describe(step: Step) -> str:
    """One human line per step (used by `up --dry-run`)."""
    match step:
        case UseBackend(backend, build, reason):
            return f"llama.cpp {backend}" + (f" ({build})" if build else "") + f": {reason}"
        case Upload(binary):
            return f"upload {binary.name} -> {binary.remote_path} (sha256 {str(binary.sha256)[:12]})"
        case BuildOnNode(plan):
            targets = ", ".join(target for _, target in plan.binaries)
            return f"build llama.cpp {plan.backend} on the node ({targets}) -> {plan.root}"
        case Stop(service, reason):
            return (
                f"stop {service.name} (pid {service.pid}): {reason}"
                if service.pid
                else f"stop {service.name}: {reason}"
            )
        case Forget(service):
            return f"forget {service.name} (not running)"
        case Start(spec, manager, reason):
            return f"start {spec.name} on {spec.host}:{spec.port} [{manager}]: {reason}"
        case Keep(spec, service):
            return f"keep {spec.name} on {spec.host}:{spec.port} (running, up to date)"
        case EnsureModels(spec, models):
            return f"ensure models on {spec.name}: {', '.join(models)}"
        case Fail(service, reason):
            return f"fail {service}: {reason}"
    raise AssertionError(step)


# --- the shell text of a step --------------------------------------------------------------------


def command(step: Step, cluster: str, node: str, home: str) -> str | None:
    """The shell text a Stop, Forget or Start of a detached process runs on the node (`home`: the node's $HOME,
    for systemd's unit paths); None for steps that run no single command (uploads, systemd starts, checks)."""
    match step:
        case Stop(service, _) if service.manager.startswith("systemd-"):
            scope: svc.SystemdScope = "user" if service.manager == "systemd-user" else "system"
            unit, unit_file = f"{service.name}.service", svc.unit_path(service.name, scope, home)
            return (
                f"{svc.systemctl(scope, 'disable', '--now', unit)}; "
                f"rm -f {' '.join(shell_word(p) for p in (unit_file, *record_files(cluster, node, service.name)))}; "
                f"{svc.systemctl(scope, 'daemon-reload')}"
            )
        case Stop(service, _):
            # the records go only once the process is gone
            return stop_text(service.pid, service.start_time, remove=record_files(cluster, node, service.name))
        case Forget(service):
            return f"rm -f {' '.join(shell_word(p) for p in record_files(cluster, node, service.name))}"
        case Start(spec, "process", _):
            return svc.detached_start(spec)
    return None


def record_files(cluster: str, node: str, name: str) -> tuple[str, ...]:
    """A service's files in the run directory (a coordinator also has its API key there)."""
    base = run_dir(cluster, node)
    return tuple(f"{base}/{name}.{ext}" for ext in ("pid", "unit", "key"))
