"""What runs on a node, as data: service specs from the manifest, and the shell text and unit files that
start them. Pure: no I/O, so every command line and unit file is tested as text.

Two service managers: systemd units when the node has systemd (rendered here), otherwise a detached
process with a pidfile holding pid and start time, so `down` never kills a process that merely reused the
pid (the node-side protocol is `ssh/nodeproc.py`'s).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Literal

from sollol_cli.llamacpp.nodeplan import NodeBuildPlan
from sollol_cli.manifest.models import Cluster, LlamaCpp, Node, pooling_flags
from sollol_cli.ssh.nodeproc import REMOTE_HOME, log_path, pid_path, run_dir, shell_word, start_text

ServiceKind = Literal["rpc", "ollama", "llamacpp"]
ReadyCheck = Literal["rpc-hello", "llama-health", "ollama-version"]
BINARY_FOR: dict[ServiceKind, str] = {"rpc": "rpc-server", "llamacpp": "llama-server", "ollama": "ollama"}


@dataclass(frozen=True)
class ServiceSpec:
    """One long-running process on a node. `digest` changes whenever anything that needs a restart changes."""

    cluster: str
    node: str
    kind: ServiceKind
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    host: str  # address it binds
    port: int
    ready: ReadyCheck
    binary_sha256: str | None = None  # uploaded binaries: a new build means a restart
    backend: str = "cpu"  # the llama.cpp build's backend (cpu | vulkan | cuda | rocm)
    models: tuple[str, ...] = field(default=(), compare=False)  # ollama models to have (pulled, not a restart)
    model_file: str | None = field(default=None, compare=False)  # llama-server's GGUF on the node

    @property
    def name(self) -> str:
        return f"sollol-{self.cluster}-{self.kind}-{self.port}"

    @property
    def digest(self) -> str:
        # a backend other than cpu is part of it (a switch restarts even with the user's same binaries); cpu is
        # left out so services started before backends existed keep their digests and are not restarted
        parts: list[object] = [self.argv, self.env, self.binary_sha256]
        if self.backend != "cpu":
            parts.append(self.backend)
        payload = json.dumps(parts, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def log_path(self) -> str:
        return log_path(self.cluster, self.node, self.name)

    @property
    def pid_path(self) -> str:
        return pid_path(self.cluster, self.node, self.name)


@dataclass(frozen=True)
class BinarySource:
    """Where a llama.cpp binary comes from for a node: uploaded from the controller, or already there."""

    name: str  # rpc-server | llama-server
    remote_path: str
    local_path: str | None = None  # None: use remote_path as it is on the node
    sha256: str | None = None
    build: str = ""  # what it is, for the plan and `status`: `cpu 0.3.36`, `vulkan 0.3.36`, `bin_dir`, ...
    build_key: str | None = None  # built on the node by `up` (nodeplan.py): the build, not a checksum, says which

    @property
    def identity(self) -> str | None:
        """What changes when the binary does (a new one means a restart)."""
        return self.sha256 or self.build_key


@dataclass(frozen=True)
class LocalBuild:
    """A pair of llama.cpp binaries on the controller: binary name -> (path, sha256), and what it is."""

    files: dict[str, tuple[str, str]]
    label: str  # `cpu 0.3.36`, `vulkan 0.3.36`, `bin_dir`
    user: bool = False  # the user's own (llama_cpp.bin_dir): the same binaries whatever the backend


# backend -> binary name -> where it comes from: the builds `up` can put on a node
Builds = dict[str, dict[str, BinarySource]]
ALL_BACKENDS = ("cpu", "vulkan", "cuda", "rocm")


def binary_sources(
    llama: LlamaCpp, local_bins: dict[str, tuple[str, str]], *, remote_dir: str = "bin", build: str = ""
) -> dict[str, BinarySource]:
    """`local_bins` maps binary name -> (controller path, sha256) of sollol's build or the configured dir;
    uploads go to `$HOME/.sollol/<remote_dir>/`. `llama`: the llama_cpp settings of the node(s) concerned."""
    sources: dict[str, BinarySource] = {}
    for name in ("rpc-server", "llama-server"):
        if llama.node_bin_dir:
            path = f"{llama.node_bin_dir.rstrip('/')}/{name}"
            sources[name] = BinarySource(name, path, build=build or "node_bin_dir")
        elif name in local_bins:
            path, sha = local_bins[name]
            remote = f"{REMOTE_HOME}/{remote_dir}/{name}"
            sources[name] = BinarySource(name, remote, local_path=path, sha256=sha, build=build)
    return sources


def build_sources(llama: LlamaCpp, local: dict[str, LocalBuild]) -> Builds:
    """Per backend, the binaries a node choosing it gets. The user's binaries (`node_bin_dir` on the nodes,
    `bin_dir` on the controller) serve every backend: sollol cannot tell what they were built for. sollol's
    own builds each have their directory on the node (`bin/` for cpu, `bin/vulkan/`), so switching a node
    back and forth uploads nothing twice."""
    if llama.node_bin_dir:
        return {backend: binary_sources(llama, {}) for backend in ALL_BACKENDS}
    builds: Builds = {}
    for backend, found in local.items():
        remote_dir = "bin" if backend == "cpu" or found.user else f"bin/{backend}"
        builds[backend] = binary_sources(llama, found.files, remote_dir=remote_dir, build=found.label)
    return builds


def node_build_sources(plan: NodeBuildPlan) -> dict[str, BinarySource]:
    """The binaries a build on the node makes, where it installs them."""
    return {
        name: BinarySource(name, plan.binary_path(name), build=plan.label, build_key=plan.key)
        for name, _ in plan.binaries
    }


def rpc_servers_on_machine(cluster: Cluster, node: Node) -> int:
    """How many of the manifest's rpc-servers run on `node`'s machine (at least 1)."""
    return max(1, sum(1 for n in cluster.nodes if n.rpc is not None and n.machine == node.machine))


def node_services(
    cluster: str,
    node: Node,
    sources: dict[str, BinarySource],
    *,
    cpus: int | None = None,
    rpc_sharing: int = 1,
    backend: str = "cpu",
) -> list[ServiceSpec]:
    """The services the manifest asks for on `node`, in start order (`cpus`: the node's core count;
    `rpc_sharing`: how many of the manifest's rpc-servers run on the node's machine; `backend`: the llama.cpp
    build `sources` are)."""
    specs: list[ServiceSpec] = []
    address = node.host
    if node.rpc is not None:
        rpc = node.rpc
        bind = rpc.bind or address
        source = sources.get("rpc-server")
        argv = [source.remote_path if source else "rpc-server", "-H", bind, "-p", str(rpc.port)]
        # rpc-server uses one thread unless told otherwise: default to the machine's cores, divided among its
        # rpc-servers (several on one machine, each with every core, spin-wait against each other)
        threads = rpc.threads or (max(1, cpus // rpc_sharing) if cpus else None)
        if threads:
            argv += ["-t", str(threads)]
        if rpc.cache:
            argv.append("-c")
        if rpc.devices:  # one rpc-server serves them all: `-d A,B` (the pinned rpc-server splits it on commas)
            argv += ["-d", ",".join(rpc.devices)]
        sha = source.identity if source else None
        env = tuple(sorted(rpc.environment.items()))
        specs.append(
            ServiceSpec(cluster, node.name, "rpc", tuple(argv), env, bind, rpc.port, "rpc-hello", sha, backend)
        )
    if node.ollama is not None:
        ollama = node.ollama
        bind = ollama.bind or address
        env = (("OLLAMA_HOST", f"{bind}:{ollama.port}"), *sorted(ollama.environment.items()))
        specs.append(
            ServiceSpec(
                cluster,
                node.name,
                "ollama",
                (ollama.binary, "serve"),
                env,
                bind,
                ollama.port,
                "ollama-version",
                models=tuple(ollama.models),
            )  # fmt: skip
        )
    if node.llamacpp is not None:
        llama = node.llamacpp
        bind = llama.bind or address
        source = sources.get("llama-server")
        argv = [source.remote_path if source else "llama-server", "-m", llama.model, "--host", bind]
        argv += ["--port", str(llama.port), "-np", str(llama.slots), "-ngl", str(llama.gpu_layers), "--metrics"]
        if llama.context:
            argv += ["-c", str(llama.context)]
        if llama.threads:
            argv += ["-t", str(llama.threads)]
        argv += ["--alias", llama.served_name, *pooling_flags(llama.embeddings, llama.pooling)]
        sha = source.identity if source else None
        specs.append(
            ServiceSpec(
                cluster,
                node.name,
                "llamacpp",
                tuple(argv),
                (),
                bind,
                llama.port,
                "llama-health",
                sha,
                backend,
                model_file=llama.model,
            )  # fmt: skip
        )
    return specs


def _command_line(spec: ServiceSpec) -> str:
    """argv with $HOME left for the shell to expand (paths below REMOTE_HOME), everything else quoted."""
    return " ".join(shell_word(arg) for arg in spec.argv)


def _env_prefix(spec: ServiceSpec) -> str:
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in spec.env)


# --- detached processes (no systemd) -------------------------------------------------------------


def detached_start(spec: ServiceSpec) -> str:
    """Start `spec` so it survives the SSH session, with its pidfile; print `pid starttime` of the new process."""
    env = _env_prefix(spec)
    run = f"env {env} {_command_line(spec)}" if env else _command_line(spec)
    record = f"{spec.digest} {spec.kind} {spec.host} {spec.port}"
    return start_text(
        run, run_dir=run_dir(spec.cluster, spec.node), log=spec.log_path, pidfile=spec.pid_path, record=record
    )


# --- systemd ------------------------------------------------------------------------------------

SystemdScope = Literal["system", "user"]


def unit_text(spec: ServiceSpec, *, home: str, restart: bool = True) -> str:
    """A systemd unit for `spec`. `home` replaces $HOME: unit files do not expand shell variables."""
    argv = " ".join(_systemd_quote(arg.replace("$HOME", home)) for arg in spec.argv)
    lines = [
        "[Unit]",
        f"Description=sollol {spec.kind} on {spec.host}:{spec.port}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"ExecStart={argv}",
        *(f"Environment={_systemd_quote(f'{k}={v}')}" for k, v in spec.env),
        f"StandardOutput=append:{spec.log_path.replace('$HOME', home)}",
        f"StandardError=append:{spec.log_path.replace('$HOME', home)}",
        # always, not on-failure: rpc-server exits 0 when it cannot bind (say a user unit started before the
        # node's address is up: user managers have no network-online.target), and a SIGTERM from outside
        # counts as a clean exit; either would leave the service dead until the next `up`
        f"Restart={'always' if restart else 'no'}",
        "RestartSec=2",
        f"X-SollolDigest={spec.digest}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def _systemd_quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "/._-:=,@+" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_path(name: str, scope: SystemdScope, home: str) -> str:
    base = "/etc/systemd/system" if scope == "system" else f"{home}/.config/systemd/user"
    return f"{base}/{name}.service"


def systemctl(scope: SystemdScope, *args: str) -> str:
    user = " --user" if scope == "user" else ""
    return f"systemctl{user} " + " ".join(shlex.quote(a) for a in args)
