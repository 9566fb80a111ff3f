"""Pydantic models of cluster.yaml. Strict (`extra="forbid"`) because humans type it; every field defaults.

Cross-field rules (duplicates, shard models without rpc nodes, ...) live in `Cluster`'s validator so that
they are reported with the same file:line mapping as type errors.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from sollol_cli.names import normalize_model_name

Port = Annotated[int, Field(ge=1, le=65535)]
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
LOCAL = "local"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def check_address(value: str) -> str:
    """An IP literal or a DNS name; IP literals are what llama.cpp's static builds need."""
    value = value.strip()
    if value == LOCAL:
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", value) or not _HOSTNAME.match(value):
        raise ValueError(f"'{value}' is not an IP address or host name")
    return value


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError("use letters, digits, '.', '_' or '-' (at most 63)")
    return value


def check_bind(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"bind must be an IP address literal, not '{value}'") from None


class HostKeyPolicy(StrEnum):
    strict = "strict"
    accept_new = "accept-new"
    off = "off"


class SshOptions(Strict):
    """How sollol reaches nodes over SSH."""

    user: str = Field("root", description="Login user on the nodes.")
    port: Port = Field(22, description="SSH port.")
    identity_file: str | None = Field(None, description="Private key file on the controller (~ is expanded).")
    host_key_policy: HostKeyPolicy = Field(
        HostKeyPolicy.strict,
        description="strict: key must be in known_hosts; accept-new: trust on first use, recorded in sollol's "
        "own known_hosts, changed keys refused; off: no checking (warns loudly).",
    )
    known_hosts: str | None = Field(
        None, description="known_hosts file to verify against (default ~/.ssh/known_hosts)."
    )
    use_ssh_config: bool = Field(False, description="Also read ~/.ssh/config.")
    use_agent: bool = Field(False, description="Also offer keys from the running ssh-agent.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to establish the TCP connection and log in.")
    command_timeout: float = Field(120.0, gt=0, description="Seconds any single remote command may take.")


class SshOverrides(Strict):
    """Per-node SSH settings; anything unset comes from the cluster-wide `ssh` section."""

    user: str | None = None
    port: Port | None = None
    identity_file: str | None = None
    host_key_policy: HostKeyPolicy | None = None
    known_hosts: str | None = None


class OllamaRole(Strict):
    """Run `ollama serve` on the node."""

    port: Port = Field(11434, description="Port Ollama listens on.")
    bind: str | None = Field(None, description="Address to bind (default: the node's address).")
    models: list[str] = Field(default_factory=list, description="Models to pull if missing.")
    environment: dict[str, str] = Field(
        default_factory=dict, description="Extra environment, e.g. OLLAMA_NUM_PARALLEL: '4'."
    )
    binary: str = Field("ollama", description="The ollama executable on the node.")

    _bind = field_validator("bind")(classmethod(lambda cls, v: check_bind(v)))

    _environment = field_validator("environment", mode="before")(classmethod(lambda cls, v: _stringify_env(v)))


def _stringify_env(value: Any) -> Any:
    """YAML `4` or `true` in an environment mapping -> "4", "true" (processes see strings)."""
    if isinstance(value, dict):
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    return value


MEMORY_MIB = (
    "At most this much of each of the rpc-server's devices is planned for model layers, MiB (default: all it "
    "reports free; the pinned rpc-server has no -m to report less)."
)


class RpcRole(Strict):
    """Run llama.cpp's `rpc-server` (no authentication: bound to the node's cluster address only).

    One rpc-server serves all the node's devices (`device: [CUDA0, CUDA1]` -> `-d CUDA0,CUDA1`), not one per
    device: the pinned rpc-server serves a device list on one port, and llama-server registers each device of
    an `--rpc` endpoint as a device of its own (own `-ts` share, own buffers), so more processes would add
    ports and tensor caches but nothing llama-server could not already address. The cost: one coordinator at
    a time uses the node's devices (an rpc-server serves one client at a time).
    """

    port: Port = Field(50052, description="Port rpc-server listens on.")
    bind: str | None = Field(
        None,
        description="Address to bind (default: the node's address; 0.0.0.0 only if you accept the risk).",
    )
    threads: int | None = Field(
        None, ge=1, description="CPU threads (default: the machine's cores, divided among its rpc-servers)."
    )
    cache: bool = Field(True, description="Tensor cache (-c): much faster reloads of the same model.")
    device: str | list[str] | None = Field(
        None,
        description="Device or devices to serve (-d), e.g. CUDA0 or [CUDA0, CUDA1] (default: every GPU the "
        "build sees, else the CPU). One rpc-server serves them all; the split gives each device its own share.",
    )
    memory_mib: int | None = Field(None, ge=1, description=MEMORY_MIB)
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment, e.g. GGML_VK_VISIBLE_DEVICES: '0' (a Vulkan build on a CPU-type Vulkan "
        "device such as Mesa's lavapipe, which ggml skips unless told).",
    )

    _bind = field_validator("bind")(classmethod(lambda cls, v: check_bind(v)))
    _environment = field_validator("environment", mode="before")(classmethod(lambda cls, v: _stringify_env(v)))

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value or []
        if isinstance(value, list) and not value:
            raise ValueError("give at least one device, or leave 'device' out")
        for name in names:
            if "," in name:
                raise ValueError(f"write several devices as a list: [{name.replace(',', ', ')}]")
            if not re.fullmatch(r"[A-Za-z][\w.-]*", name):
                raise ValueError(f"'{name}' is not a device name (ggml names them CPU, CUDA0, Vulkan1, ROCm0, ...)")
        if len(set(names)) != len(names):
            raise ValueError("a device is listed twice")
        return value

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices named in the manifest, in the order rpc-server serves them (empty: its default)."""
        if self.device is None:
            return ()
        return (self.device,) if isinstance(self.device, str) else tuple(self.device)


class Pooling(StrEnum):
    """How llama-server pools token vectors into one embedding (`--pooling`); `model`: what the GGUF says."""

    last = "last"
    mean = "mean"
    cls = "cls"
    model = "model"


# Measured on the pinned build: `--embeddings` makes llama-server reserve room for the logits of a whole batch
# (n_outputs_max 512 instead of one per slot): its compute buffer grew from 9 to 64 MiB for the 32k-vocabulary
# test model; greedy answers and speed stayed the same. So it is off unless asked for.
_EMBEDDINGS_COST = (
    "It grows llama-server's compute buffer by about 2 KiB per vocabulary entry (55 MiB for a 32k "
    "vocabulary, about 300 MiB for 150k), so it is off by default."
)
EMBEDDINGS_HELP = f"Serve embeddings (/api/embed, /v1/embeddings; llama-server --embeddings). {_EMBEDDINGS_COST}"
MODEL_EMBEDDINGS_HELP = f"Serve embeddings from a sharded model's coordinator (--embeddings). {_EMBEDDINGS_COST}"
POOLING_HELP = (
    "How an embedding pools the token vectors (--pooling): last (default; right for chat models), mean, cls, "
    "or model (what the GGUF declares: use it for dedicated embedding models). Needs embeddings: true."
)


def pooling_flags(embeddings: bool, pooling: Pooling | None) -> list[str]:
    """llama-server flags for the embeddings settings. `--pooling` only with `--embeddings`: any pooling
    but none alone makes llama-server reserve the same batch-sized output buffer."""
    if not embeddings:
        return []
    chosen = pooling or Pooling.last
    return ["--embeddings"] if chosen is Pooling.model else ["--embeddings", "--pooling", chosen.value]


class LlamacppRole(Strict):
    """Run `llama-server` with a whole GGUF on the node (task distribution)."""

    port: Port = Field(8080, description="Port llama-server listens on.")
    bind: str | None = Field(None, description="Address to bind (default: the node's address).")
    model: str = Field(description="GGUF path on the node.")
    alias: str | None = Field(None, description="Model name clients use (default: the file name without .gguf).")
    slots: int = Field(1, ge=1, le=256, description="Parallel requests (-np).")
    context: int | None = Field(None, ge=256, description="Context size (-c), shared by all slots.")
    threads: int | None = Field(None, ge=1, description="CPU threads (-t).")
    gpu_layers: int = Field(999, ge=0, description="Layers to offload (-ngl).")
    embeddings: bool = Field(False, description=EMBEDDINGS_HELP)
    pooling: Pooling | None = Field(None, description=POOLING_HELP)

    @property
    def served_name(self) -> str:
        """The model name clients use: the alias, else the GGUF's file name without `.gguf`."""
        return self.alias or self.model.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")

    _bind = field_validator("bind")(classmethod(lambda cls, v: check_bind(v)))


class Resources(Strict):
    """Hints used when nothing can be measured on the node."""

    ram_gib: float | None = Field(None, gt=0, description="RAM usable for models, GiB.")
    vram_gib: float | None = Field(None, ge=0, description="GPU memory, GiB.")


def _role_shorthand(value: Any) -> Any:
    """`rpc: true` or `rpc:` (empty) means the role with all defaults; `false` means no role."""
    if value is True or value is None:
        return {}
    if value is False:
        return None
    return value


class LlamaCppBackend(StrEnum):
    """Which llama.cpp build serves a node's rpc-server and llama-server."""

    auto = "auto"
    cpu = "cpu"
    vulkan = "vulkan"
    cuda = "cuda"
    rocm = "rocm"


BACKEND_DESCRIPTION = (
    "auto: vulkan where the node has a Vulkan GPU and loader, cuda/rocm where binaries for them exist, else cpu; "
    "cpu: the static build; vulkan: `sollol llama-cpp build --backend vulkan`; cuda/rocm: built on the node "
    "(build: node) or your own binaries (bin_dir/node_bin_dir). `up` chooses per node from its facts and puts that "
    "build there; a node that cannot run an explicit choice fails with the reason, the others come up."
)


class LlamaCppBuild(StrEnum):
    """Where the llama.cpp binaries a node runs are built."""

    controller = "controller"
    node = "node"


BUILD_DESCRIPTION = (
    "controller: sollol's builds on this machine (or bin_dir/node_bin_dir), uploaded to the nodes; node: `up` "
    "uploads the pinned sources and builds on the node with its own toolchain (cmake, a C++ compiler, and "
    "nvcc, ROCm's hipconfig or glslc for cuda, rocm or vulkan), only the binaries its roles run, cached there."
)
BUILD_ENVIRONMENT_DESCRIPTION = "Extra environment of a build on the node, e.g. CCACHE_DIR: /var/cache/ccache."


class NodeLlamaCpp(Strict):
    """This node's llama.cpp build, where it differs from the cluster's `llama_cpp`. A node's own binaries
    (`bin_dir`, `node_bin_dir`, `build: node`) win over the cluster's."""

    backend: LlamaCppBackend | None = Field(None, description=f"Default: the cluster's. {BACKEND_DESCRIPTION}")
    build: LlamaCppBuild | None = Field(None, description=f"Default: the cluster's. {BUILD_DESCRIPTION}")
    bin_dir: str | None = Field(
        None, description="Directory on the controller with this node's rpc-server and llama-server to upload."
    )
    node_bin_dir: str | None = Field(
        None, description="Directory already on the node holding rpc-server and llama-server (skips the upload)."
    )
    build_environment: dict[str, str] = Field(
        default_factory=dict, description=f"{BUILD_ENVIRONMENT_DESCRIPTION} Added to the cluster's."
    )

    _environment = field_validator("build_environment", mode="before")(classmethod(lambda cls, v: _stringify_env(v)))

    @property
    def own_binaries(self) -> bool:
        return self.bin_dir is not None or self.node_bin_dir is not None or self.build is not None


class Node(Strict):
    """A machine sollol manages over SSH (or `address: local` for the controller itself)."""

    name: str = Field(description="Unique node name.")
    address: str = Field(description="IP address or host name on the cluster network, or 'local'.")
    transport: Literal["ssh", "local"] | None = Field(
        None, description="ssh (default) or local (this machine, no SSH); 'address: local' implies local."
    )
    ssh: SshOverrides | None = None
    priority: int = Field(0, description="Routing tier: higher tiers are preferred while they have capacity.")
    resources: Resources | None = None
    ollama: OllamaRole | None = None
    rpc: RpcRole | None = None
    llamacpp: LlamacppRole | None = None
    llama_cpp: NodeLlamaCpp | None = Field(None, description="This node's llama.cpp build (default: the cluster's).")

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return check_address(value)

    @field_validator("ollama", "rpc", "llamacpp", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _role_shorthand(value)

    @property
    def is_local(self) -> bool:
        return self.transport == "local" or self.address == LOCAL

    @property
    def host(self) -> str:
        """The address other machines use; `local` nodes are reached on loopback."""
        return "127.0.0.1" if self.address == LOCAL else self.address

    @property
    def machine(self) -> str:
        """Which machine it is: nodes on one machine share its cores and memory."""
        return "local" if self.is_local else self.address

    @property
    def roles(self) -> list[str]:
        return [r for r in ("ollama", "rpc", "llamacpp") if getattr(self, r) is not None]


class BackendKind(StrEnum):
    ollama = "ollama"
    llamacpp = "llamacpp"
    rpc = "rpc"


DEFAULT_PORTS = {BackendKind.ollama: 11434, BackendKind.llamacpp: 8080, BackendKind.rpc: 50052}


class Backend(Strict):
    """A backend sollol uses but does not manage (no SSH), e.g. an Ollama someone else runs."""

    name: str | None = Field(None, description="Display name (default: kind@address:port).")
    kind: BackendKind
    address: str
    port: Port | None = Field(None, description="Default: 11434 ollama, 8080 llamacpp, 50052 rpc.")
    priority: int = Field(0, description="Routing tier: higher tiers are preferred while they have capacity.")
    slots: int | None = Field(
        None, ge=1, le=256, description="Requests it serves at once (its OLLAMA_NUM_PARALLEL / -np); default 1."
    )
    memory_mib: int | None = Field(None, ge=1, description=f"kind rpc only. {MEMORY_MIB}")

    _address = field_validator("address")(classmethod(lambda cls, v: check_address(v)))

    @model_validator(mode="after")
    def _memory_for_rpc(self) -> Backend:
        if self.memory_mib is not None and self.kind is not BackendKind.rpc:
            raise ValueError("memory_mib is for rpc backends (kind: rpc) only; remove it here")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.kind]

    @property
    def label(self) -> str:
        return self.name or f"{self.kind.value}@{self.address}:{self.effective_port}"


class LlamaCpp(Strict):
    """Which llama.cpp binaries to use."""

    bin_dir: str | None = Field(
        None,
        description="Directory on the controller with rpc-server and llama-server to upload "
        "(default: sollol's own build, `sollol llama-cpp build`). A node's own bin_dir, node_bin_dir or build wins.",
    )
    node_bin_dir: str | None = Field(
        None,
        description="Directory already on every node holding the binaries (skips the upload). A node's own "
        "bin_dir, node_bin_dir or build wins.",
    )
    protocol: str | None = Field(
        None,
        pattern=r"^\d+\.\d+\.\d+$",
        description="Expected RPC protocol version, e.g. 7.0.0 (default: the build's).",
    )
    backend: LlamaCppBackend = Field(LlamaCppBackend.auto, description=BACKEND_DESCRIPTION)
    build: LlamaCppBuild = Field(LlamaCppBuild.controller, description=BUILD_DESCRIPTION)
    build_environment: dict[str, str] = Field(default_factory=dict, description=BUILD_ENVIRONMENT_DESCRIPTION)

    _environment = field_validator("build_environment", mode="before")(classmethod(lambda cls, v: _stringify_env(v)))

    def for_node(self, node: Node) -> LlamaCpp:
        """The settings that apply to `node`: its own `llama_cpp` over these. Its own binaries (bin_dir,
        node_bin_dir or build) replace the cluster's binaries as a whole: the cluster's bin_dir does not
        linger beside a node's `build: node`."""
        own = node.llama_cpp
        if own is None:
            return self
        changes: dict[str, Any] = {"build_environment": {**self.build_environment, **own.build_environment}}
        if own.backend is not None:
            changes["backend"] = own.backend
        if own.own_binaries:
            changes.update(
                bin_dir=own.bin_dir, node_bin_dir=own.node_bin_dir, build=own.build or LlamaCppBuild.controller
            )
        return self.model_copy(update=changes)


class ModelMode(StrEnum):
    auto = "auto"
    distribute = "distribute"
    shard = "shard"


class SplitBy(StrEnum):
    """How a sharded model's layers are split over its rpc backends (when `tensor_split` does not say)."""

    speed = "speed"
    memory = "memory"


class Model(Strict):
    """A model the cluster serves."""

    name: str = Field(description="Name clients use, e.g. codellama:13b.")
    gguf: str | None = Field(None, description="GGUF path on the controller (instead of an Ollama store).")
    ollama_model: str | None = Field(None, description="Ollama model to take the GGUF from (default: name).")
    store: str | None = Field(None, description="Ollama model store directory (default: the usual places).")
    store_node: str | None = Field(None, description="Node whose Ollama store holds the model (default: controller).")
    mode: ModelMode = Field(ModelMode.auto, description="auto: distribute if it fits on one node, else shard.")
    context: int = Field(4096, ge=256, description="Context size in tokens.")
    slots: int = Field(1, ge=1, le=64, description="Parallel requests of a sharded model's coordinator.")
    tensor_split: list[float] | None = Field(
        None,
        description="Share of layers per rpc device (llama-server -ts), in node order, each node's devices in its "
        "rpc.device order.",
    )
    split_by: SplitBy = Field(
        SplitBy.speed,
        description="speed: the fastest rpc backends filled first, within their memory, once their speeds are "
        "measured (by memory until then); memory: in proportion to free memory, nothing measured.",
    )
    keep_alive: float = Field(300.0, ge=0, description="Seconds an idle coordinator stays loaded.")
    coordinator: str | None = Field(
        None, description="Node that runs a sharded model's coordinator, over SSH (default: the controller)."
    )
    coordinator_port: Port | None = Field(
        None, description="Port of a coordinator on a node (default: a free one from 41100-41999)."
    )
    embeddings: bool = Field(False, description=MODEL_EMBEDDINGS_HELP)
    pooling: Pooling | None = Field(None, description=POOLING_HELP)

    @field_validator("tensor_split")
    @classmethod
    def _split(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (not value or any(v < 0 for v in value) or sum(value) <= 0):
            raise ValueError("tensor_split needs non-negative shares with a positive sum")
        return value


class Gateway(Strict):
    """`sollol serve`."""

    host: str = Field("127.0.0.1", description="Address to bind; 127.0.0.1 keeps the gateway private.")
    port: Port = 11434
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable holding the API key."
    )

    _host = field_validator("host")(classmethod(lambda cls, v: check_bind(v)))


class Routing(Strict):
    retries: int = Field(2, ge=0, le=10, description="Other backends to try when one fails before the first byte.")
    queue_length: int = Field(64, ge=0, description="Requests that may wait when every backend is busy.")
    queue_wait: float = Field(30.0, ge=0, description="Seconds a request may wait for a free slot.")
    probe_interval: float = Field(5.0, gt=0, description="Seconds between health probes.")
    connect_timeout: float = Field(3.0, gt=0, description="Seconds to connect to a backend.")
    read_timeout: float = Field(300.0, gt=0, description="Seconds a backend may stay silent mid-request.")
    first_byte_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds a backend with the model loaded may take to its first token (prompt evaluation) "
        "before the request is retried elsewhere.",
    )
    load_timeout: float = Field(
        600.0,
        gt=0,
        description="The same limit when the model still has to be loaded into memory first.",
    )
    breaker_cooldown: float = Field(
        30.0,
        gt=0,
        description="Seconds a backend that failed 3 requests in a row gets no requests, unless a probe "
        "finds it back sooner.",
    )


def check_cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"'{value}' is not a CIDR like 10.0.0.0/24") from None


class Discovery(Strict):
    subnets: list[Annotated[str, AfterValidator(check_cidr)]] = Field(
        default_factory=list, description="CIDRs `sollol discover` scans by default."
    )
    ports: list[Port] = Field(default_factory=lambda: [11434, 8080, 50052])


class Cluster(Strict):
    """cluster.yaml: the whole cluster."""

    name: str = Field("cluster", description="Cluster name (used for the state file).")
    ssh: SshOptions = Field(default_factory=SshOptions, description="How to reach nodes.")
    nodes: list[Node] = Field(default_factory=list, description="Machines sollol manages.")
    backends: list[Backend] = Field(default_factory=list, description="Backends used as they are (no SSH).")
    llama_cpp: LlamaCpp = Field(default_factory=LlamaCpp, description="llama.cpp binaries.")
    models: list[Model] = Field(default_factory=list, description="Models and how to run them.")
    gateway: Gateway = Field(default_factory=Gateway, description="`sollol serve` settings.")
    routing: Routing = Field(default_factory=Routing, description="Retries, queueing, probes.")
    discovery: Discovery = Field(default_factory=Discovery, description="`sollol discover` defaults.")

    _name = field_validator("name")(classmethod(lambda cls, v: check_name(v)))

    @model_validator(mode="after")
    def _cross_checks(self) -> Cluster:
        problems = cross_check(self)
        if problems:
            # Raised as one error per location; the loader splits them back out (see loader._cross_problems).
            raise ValueError(CrossCheckProblems(problems))
        return self

    def builds_on_node(self, node: Node) -> bool:
        """Whether `up` builds llama.cpp on `node` itself: `build: node` applies and a role there runs it."""
        runs = node.rpc is not None or node.llamacpp is not None
        return runs and self.llama_cpp.for_node(node).build is LlamaCppBuild.node

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


class CrossCheckProblems(list[tuple[tuple[str | int, ...], str]]):
    """Problems found across fields: (location, message) pairs."""

    def __str__(self) -> str:
        return "; ".join(msg for _, msg in self)


def listeners(cluster: Cluster) -> list[tuple[tuple[str | int, ...], str, int]]:
    """Every (location, host, port) the cluster listens on or talks to."""
    found: list[tuple[tuple[str | int, ...], str, int]] = []
    for i, node in enumerate(cluster.nodes):
        for role in node.roles:
            spec = getattr(node, role)
            host = spec.bind or node.host
            found.append((("nodes", i, role, "port"), host, spec.port))
    for i, backend in enumerate(cluster.backends):
        found.append((("backends", i, "port"), backend.address, backend.effective_port))
    return found


def cross_check(cluster: Cluster) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    seen: dict[str, int] = {}
    for i, node in enumerate(cluster.nodes):
        if node.llamacpp is not None and node.llamacpp.pooling is not None and not node.llamacpp.embeddings:
            problems.append((("nodes", i, "llamacpp", "pooling"), _POOLING_ALONE))
        if node.name in seen:
            problems.append(
                (("nodes", i, "name"), f"duplicate node name '{node.name}' (also nodes[{seen[node.name]}])")
            )
        else:
            seen[node.name] = i
    problems.extend(_build_problems(cluster))
    taken: dict[tuple[str, int], tuple[str | int, ...]] = {}
    for loc, host, port in listeners(cluster):
        if (host, port) in taken:
            problems.append((loc, f"{host}:{port} is already used by {_dotted(taken[(host, port)])}"))
        else:
            taken[(host, port)] = loc
    names = set(seen)
    rpc_nodes = [n for n in cluster.nodes if n.rpc is not None]
    rpc_backends = [b for b in cluster.backends if b.kind is BackendKind.rpc]
    model_names: dict[str, int] = {}
    for i, model in enumerate(cluster.models):
        key = normalize_model_name(model.name)  # `tiny` and `library/tiny:latest` are one model
        if key in model_names:
            problems.append(
                (("models", i, "name"), f"duplicate model '{model.name}' (also models[{model_names[key]}])")
            )
        model_names.setdefault(key, i)
        if model.pooling is not None and not model.embeddings:
            problems.append((("models", i, "pooling"), _POOLING_ALONE))
        if model.mode is ModelMode.shard and not rpc_nodes and not rpc_backends:
            problems.append((("models", i, "mode"), "mode 'shard' needs at least one node with an 'rpc' role"))
        ref = model.store_node
        if ref is not None and ref not in names:
            problems.append((("models", i, "store_node"), f"no node named '{ref}'{_suggest(ref, names)}"))
        if ref is not None and model.gguf:
            problems.append(
                (("models", i, "store_node"), "store_node takes the GGUF from an Ollama store; drop 'gguf'")
            )
        problems.extend(_coordinator_problems(cluster, i, model, names))
        if model.gguf and model.ollama_model:
            problems.append((("models", i, "gguf"), "give either 'gguf' or 'ollama_model', not both"))
        if model.tensor_split is not None and rpc_nodes:
            problems.extend(_split_problems(cluster, i, len(model.tensor_split)))
    return problems


def _split_problems(cluster: Cluster, i: int, shares: int) -> list[tuple[tuple[str | int, ...], str]]:
    """llama-server's -ts takes one share per device, and an rpc-server may serve several: the count is known
    for nodes that name their devices and for CPU builds (one device); a GPU build left to its default serves
    every GPU it sees, so a cluster with such a node only has a lower bound."""
    known, exact = 0, True
    for node in cluster.nodes:
        if node.rpc is None:
            continue
        if node.rpc.devices:
            known += len(node.rpc.devices)
        else:
            known += 1
            exact = exact and cluster.llama_cpp.for_node(node).backend is LlamaCppBackend.cpu
    known += sum(1 for b in cluster.backends if b.kind is BackendKind.rpc)  # unmanaged: one device assumed
    where, devices = ("models", i, "tensor_split"), "device" if known == 1 else "devices"
    if exact and shares != known:
        return [(where, f"has {shares} shares but the cluster's rpc backends serve {known} {devices}")]
    if not exact and shares < known:
        return [(where, f"has {shares} shares but the cluster's rpc backends serve at least {known} {devices}")]
    return []


def _build_problems(cluster: Cluster) -> list[tuple[tuple[str | int, ...], str]]:
    """Binaries given two ways at once: built on the node and also given as a directory, or both directories."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    blocks: list[tuple[tuple[str | int, ...], LlamaCpp | NodeLlamaCpp]] = [(("llama_cpp",), cluster.llama_cpp)]
    blocks += [(("nodes", i, "llama_cpp"), n.llama_cpp) for i, n in enumerate(cluster.nodes) if n.llama_cpp]
    for loc, block in blocks:
        if block.build is LlamaCppBuild.node:
            for given in ("bin_dir", "node_bin_dir"):
                if getattr(block, given) is not None:
                    message = f"build: node makes the binaries on the node; drop '{given}' or use build: controller"
                    problems.append(((*loc, given), message))
        elif isinstance(block, NodeLlamaCpp) and block.bin_dir is not None and block.node_bin_dir is not None:
            problems.append(((*loc, "bin_dir"), "give either 'bin_dir' (uploaded) or 'node_bin_dir', not both"))
    return problems


_POOLING_ALONE = "pooling applies to embeddings only: add 'embeddings: true' or drop 'pooling'"


def _coordinator_problems(
    cluster: Cluster, i: int, model: Model, names: set[str]
) -> list[tuple[tuple[str | int, ...], str]]:
    if model.coordinator is None:
        if model.coordinator_port is not None:
            return [(("models", i, "coordinator_port"), "coordinator_port needs 'coordinator' (a node name)")]
        return []
    if model.coordinator not in names:
        message = f"no node named '{model.coordinator}'{_suggest(model.coordinator, names)}"
        return [(("models", i, "coordinator"), message)]
    host = cluster.node(model.coordinator)
    if host.is_local or _loopback(host.host):
        return []  # on this machine: loopback is the same loopback
    # rpc-servers on loopback are only reachable from the controller itself
    loopback = [n.name for n in cluster.nodes if n.rpc is not None and _loopback(n.rpc.bind or n.host)]
    loopback += [b.label for b in cluster.backends if b.kind is BackendKind.rpc and _loopback(b.address)]
    if loopback:
        message = f"a coordinator on node '{host.name}' cannot reach the rpc-servers on loopback: {', '.join(loopback)}"
        return [(("models", i, "coordinator"), message)]
    return []


def _loopback(address: str) -> bool:
    return address.startswith("127.")


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _suggest(word: str, options: set[str] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
