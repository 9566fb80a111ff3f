"""What runs on a node, as data: service specs from the manifest, and the shell text that starts,
stops and checks them. Pure: no I/O, so every command line and unit file is tested as text.

Two service managers: systemd units when the node has systemd (rendered here), otherwise a detached
process (setsid + nohup) with a pidfile holding pid and start time, so `down` never kills a process that
merely reused the pid.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Literal

from sollol_cli.manifest.models import Cluster, Node

REMOTE_HOME = "$HOME/.sollol"  # expanded by the node's shell; everything sollol writes lives below it
# Per-cluster run and log directories: `down` of one cluster never touches another cluster's services.
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
    models: tuple[str, ...] = field(default=(), compare=False)  # ollama models to have (pulled, not a restart)
    model_file: str | None = field(default=None, compare=False)  # llama-server's GGUF on the node

    @property
    def name(self) -> str:
        return f"sollol-{self.cluster}-{self.kind}-{self.port}"

    @property
    def digest(self) -> str:
        payload = json.dumps([self.argv, self.env, self.binary_sha256], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def log_path(self) -> str:
        return log_path(self.cluster, self.node, self.name)

    @property
    def pid_path(self) -> str:
        return f"{run_dir(self.cluster, self.node)}/{self.name}.pid"


# Per node as well as per cluster: several manifest nodes may be one machine (`address: local`), and each
# node's `up`/`down` must only see the services it started itself.
def run_dir(cluster: str, node: str) -> str:
    return f"{REMOTE_HOME}/{cluster}/{node}/run"


def log_path(cluster: str, node: str, service: str) -> str:
    return f"{REMOTE_HOME}/{cluster}/{node}/log/{service}.log"


@dataclass(frozen=True)
class BinarySource:
    """Where a llama.cpp binary comes from for a node: uploaded from the controller, or already there."""

    name: str  # rpc-server | llama-server
    remote_path: str
    local_path: str | None = None  # None: use remote_path as it is on the node
    sha256: str | None = None


def binary_sources(cluster: Cluster, local_bins: dict[str, tuple[str, str]]) -> dict[str, BinarySource]:
    """`local_bins` maps binary name -> (controller path, sha256) of sollol's build or the configured dir."""
    sources: dict[str, BinarySource] = {}
    for name in ("rpc-server", "llama-server"):
        if cluster.llama_cpp.node_bin_dir:
            sources[name] = BinarySource(name, f"{cluster.llama_cpp.node_bin_dir.rstrip('/')}/{name}")
        elif name in local_bins:
            path, sha = local_bins[name]
            sources[name] = BinarySource(name, f"{REMOTE_HOME}/bin/{name}", local_path=path, sha256=sha)
    return sources


def rpc_servers_on_machine(cluster: Cluster, node: Node) -> int:
    """How many of the manifest's rpc-servers run on `node`'s machine (at least 1)."""
    return max(1, sum(1 for n in cluster.nodes if n.rpc is not None and n.machine == node.machine))


def node_services(
    cluster: str, node: Node, sources: dict[str, BinarySource], *, cpus: int | None = None, rpc_sharing: int = 1
) -> list[ServiceSpec]:
    """The services the manifest asks for on `node`, in start order (`cpus`: the node's core count;
    `rpc_sharing`: how many of the manifest's rpc-servers run on the node's machine)."""
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
        if rpc.device:
            argv += ["-d", rpc.device]
        sha = source.sha256 if source else None
        specs.append(ServiceSpec(cluster, node.name, "rpc", tuple(argv), (), bind, rpc.port, "rpc-hello", sha))
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
        argv += ["--alias", llama.served_name]
        sha = source.sha256 if source else None
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
                model_file=llama.model,
            )  # fmt: skip
        )
    return specs


def _command_line(spec: ServiceSpec) -> str:
    """argv with $HOME left for the shell to expand (paths below REMOTE_HOME), everything else quoted."""
    return " ".join(_shell_word(arg) for arg in spec.argv)


def _shell_word(arg: str) -> str:
    """Quote for the node's shell, but let `$HOME/...` and `~/...` mean the home of the node's user."""
    for prefix in ("$HOME/", "~/"):
        if arg.startswith(prefix):
            return '"$HOME"/' + shlex.quote(arg[len(prefix) :])
    return shlex.quote(arg)


def _env_prefix(spec: ServiceSpec) -> str:
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in spec.env)


# --- detached processes (no systemd) -------------------------------------------------------------


def detached_start(spec: ServiceSpec) -> str:
    """Start `spec` so it survives the SSH session; print `pid starttime` of the new process.

    All I/O is redirected (else the SSH channel never closes) and the process gets its own session.
    The pidfile holds pid and start time (field 22 of /proc/PID/stat) to guard against pid reuse.
    """
    env = _env_prefix(spec)
    run = f"env {env} {_command_line(spec)}" if env else _command_line(spec)
    log, pidfile = _shell_word(spec.log_path), _shell_word(spec.pid_path)
    run_d = _shell_word(run_dir(spec.cluster, spec.node))
    log_d = _shell_word(spec.log_path.rsplit("/", 1)[0])
    return (
        f"mkdir -p {run_d} {log_d} && cd {run_d} && "
        f"{{ trap '' HUP; setsid nohup {run} >>{log} 2>&1 </dev/null & }}; "
        f"pid=$!; "
        f'start=$(cut -d" " -f22 /proc/$pid/stat 2>/dev/null || echo 0); '
        f'echo "$pid $start {spec.digest} {spec.kind} {spec.host} {spec.port}" > {pidfile}; echo "$pid $start"'
    )


def detached_stop(pid: int, start_time: int, *, grace_s: float = 5.0) -> str:
    """Stop the process only if `pid` still is the process we started (same start time)."""
    tries = max(1, int(grace_s / 0.1))
    return (
        f"p={pid}; s={start_time}; "
        f'alive() {{ [ -r /proc/$p/stat ] && [ "$(cut -d" " -f22 /proc/$p/stat)" = "$s" ] '
        f'&& [ "$(cut -d" " -f3 /proc/$p/stat)" != Z ]; }}; '
        f"if ! alive; then echo gone; exit 0; fi; "
        f"kill -TERM $p 2>/dev/null; "
        f"for i in $(seq {tries}); do alive || {{ echo stopped; exit 0; }}; sleep 0.1; done; "
        f"kill -KILL $p 2>/dev/null; sleep 0.2; alive && {{ echo still-running; exit 1; }}; echo killed"
    )


def process_check(pids: dict[str, tuple[int, int]]) -> str:
    """Print `name alive|dead` for each recorded (pid, start time); zombies count as dead."""
    parts = []
    for name, (pid, start) in sorted(pids.items()):
        parts.append(
            f'if [ -r /proc/{pid}/stat ] && [ "$(cut -d" " -f22 /proc/{pid}/stat)" = "{start}" ] '
            f'&& [ "$(cut -d" " -f3 /proc/{pid}/stat)" != Z ]; then echo "{name} alive"; else echo "{name} dead"; fi'
        )
    return "; ".join(parts) if parts else "true"


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


def unit_path(spec: ServiceSpec, scope: SystemdScope, home: str) -> str:
    base = "/etc/systemd/system" if scope == "system" else f"{home}/.config/systemd/user"
    return f"{base}/{spec.name}.service"


def systemctl(scope: SystemdScope, *args: str) -> str:
    user = " --user" if scope == "user" else ""
    return f"systemctl{user} " + " ".join(shlex.quote(a) for a in args)
