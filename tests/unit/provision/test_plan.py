"""The planner as data: (manifest node, node facts) -> the steps `up` / `down` take, as human lines."""

from __future__ import annotations

import pytest

from sollol_cli.manifest.models import Cluster
from sollol_cli.provision.facts import Listener, NodeFacts, RunningService
from sollol_cli.provision.plan import command, describe, desired_on, plan_down, plan_up
from sollol_cli.provision.services import LocalBuild, binary_sources, build_sources, node_services
from sollol_cli.ssh.nodeproc import SHELL_FUNCTIONS, stop_text
from sollol_cli.state import Accelerator

SHA = "a" * 64
OLD = "b" * 64
BIN = "$HOME/.sollol/bin/rpc-server"
LBIN = "$HOME/.sollol/bin/llama-server"


def cluster(node_yaml: dict, **top: object) -> Cluster:
    return Cluster.model_validate({"name": "lab", "nodes": [{"name": "n1", "address": "10.0.0.1", **node_yaml}], **top})


def desired(c: Cluster):  # type: ignore[no-untyped-def]
    sources = binary_sources(
        c.llama_cpp, {"rpc-server": ("/cache/rpc-server", SHA), "llama-server": ("/cache/llama-server", SHA)}
    )
    return node_services(c.name, c.nodes[0], sources), sources


def running(c: Cluster, kind: str, *, alive: bool = True, digest: str | None = None, pid: int = 100) -> RunningService:
    specs, _ = desired(c)
    spec = next(s for s in specs if s.kind == kind)
    return RunningService(spec.name, pid, 5, digest or spec.digest, kind, spec.host, spec.port, alive)


RPC = {"rpc": {"port": 50052}}
RPC_CHANGED = {"rpc": {"port": 50052, "threads": 4}}
OLLAMA = {"ollama": {"models": ["tiny"]}}


def case(node_yaml, facts_kw, expected, **top):  # type: ignore[no-untyped-def]
    return (node_yaml, facts_kw, expected, top)


CASES = {
    "fresh node: upload, start": case(RPC, {}, [
        f"upload rpc-server -> {BIN} (sha256 aaaaaaaaaaaa)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]),
    "binary present: start only": case(RPC, {"binaries": {BIN: SHA}}, [
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]),
    "converged: keep": case(RPC, {"binaries": {BIN: SHA}, "running": [("rpc", True, None)]}, [
        "keep sollol-lab-rpc-50052 on 10.0.0.1:50052 (running, up to date)",
    ]),
    "old binary: upload and restart": case(RPC, {"binaries": {BIN: OLD}, "running": [("rpc", True, "0" * 16)]}, [
        f"upload rpc-server -> {BIN} (sha256 aaaaaaaaaaaa)",
        "stop sollol-lab-rpc-50052 (pid 100): settings changed",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: settings changed",
    ]),
    "died: forget and start again": case(RPC, {"binaries": {BIN: SHA}, "running": [("rpc", False, None)]}, [
        "forget sollol-lab-rpc-50052 (not running)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]),
    "port taken by a stranger": case(RPC, {"binaries": {BIN: SHA}, "listeners": [("10.0.0.1", 50052, 77, "python3")]}, [
        "fail sollol-lab-rpc-50052: port 50052 on 10.0.0.1 is in use by pid 77 (python3); free it or change the port",
    ]),
    "wildcard listener counts": case(RPC, {"binaries": {BIN: SHA}, "listeners": [("0.0.0.0", 50052, None, None)]}, [
        "fail sollol-lab-rpc-50052: port 50052 on 10.0.0.1 is in use by another process; free it or change the port",
    ]),
    "own old process on the port is fine": case(
        RPC, {"binaries": {BIN: SHA}, "running": [("rpc", True, "0" * 16)], "listeners": [("10.0.0.1", 50052, 100, "rpc-server")]},
        ["stop sollol-lab-rpc-50052 (pid 100): settings changed",
         "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: settings changed"],
    ),
    "ollama missing": case(OLLAMA, {}, [
        "fail sollol-lab-ollama-11434: ollama is not installed ('ollama' not found); "
        "install it on the node: curl -fsSL https://ollama.com/install.sh | sh",
    ]),
    "ollama present: start and ensure models": case(OLLAMA, {"ollama_path": "/usr/bin/ollama"}, [
        "start sollol-lab-ollama-11434 on 10.0.0.1:11434 [process]: not running",
        "ensure models on sollol-lab-ollama-11434: tiny",
    ]),
    "systemd node uses units": case(RPC, {"binaries": {BIN: SHA}, "systemd": "system"}, [
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [systemd-system]: not running",
    ]),
    "node binaries given: missing on node fails": case(RPC, {}, [
        "fail sollol-lab-rpc-50052: /opt/llama/rpc-server does not exist on the node (llama_cpp.node_bin_dir)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ], llama_cpp={"node_bin_dir": "/opt/llama"}),
    "role removed: stop it": case({}, {"running": [("rpc", True, None)]}, [
        "stop sollol-lab-rpc-50052 (pid 100): no longer in the manifest",
    ]),
    "llama-server with its GGUF": case({"llamacpp": {"model": "~/m/tiny.gguf"}},
                                       {"binaries": {LBIN: SHA}, "files": frozenset({"~/m/tiny.gguf"})}, [
        "start sollol-lab-llamacpp-8080 on 10.0.0.1:8080 [process]: not running",
    ]),
    "llama-server whose GGUF is missing": case({"llamacpp": {"model": "/m/none.gguf"}}, {"binaries": {LBIN: SHA}}, [
        "fail sollol-lab-llamacpp-8080: the GGUF /m/none.gguf does not exist on the node; put it there first",
    ]),
}  # fmt: skip


@pytest.mark.parametrize(("node_yaml", "facts_kw", "expected", "top"), CASES.values(), ids=CASES.keys())
def test_plan_up(node_yaml: dict, facts_kw: dict, expected: list[str], top: dict) -> None:
    c = cluster(node_yaml, **top)
    specs, sources = desired(c)
    reference = cluster(node_yaml or RPC, **top)
    services = {}
    for kind, alive, digest in facts_kw.pop("running", []):
        service = running(reference, kind, alive=alive, digest=digest)
        services[service.name] = service
    listeners = tuple(Listener(*item) for item in facts_kw.pop("listeners", []))
    facts = NodeFacts(services=services, listeners=listeners, **facts_kw)
    plan = plan_up("n1", specs, sources, facts)
    assert [describe(step) for step in plan.steps] == expected


def test_changed_port_restarts_only_that_service() -> None:
    before = cluster({"rpc": {"port": 50052}, "ollama": {}})
    after = cluster({"rpc": {"port": 50099}, "ollama": {}})
    services = {s.name: s for s in (running(before, "rpc"), running(before, "ollama"))}
    facts = NodeFacts(services=services, binaries={BIN: SHA}, ollama_path="/usr/bin/ollama")
    specs, sources = desired(after)
    plan = plan_up("n1", specs, sources, facts)
    assert [describe(step) for step in plan.steps] == [
        "stop sollol-lab-rpc-50052 (pid 100): no longer in the manifest",
        "start sollol-lab-rpc-50099 on 10.0.0.1:50099 [process]: not running",
        "keep sollol-lab-ollama-11434 on 10.0.0.1:11434 (running, up to date)",
    ]
    assert plan.changes


def test_converged_plan_has_no_changes() -> None:
    c = cluster({"rpc": {}, "llamacpp": {"model": "/m/tiny.gguf"}})
    services = {s.name: s for s in (running(c, "rpc"), running(c, "llamacpp"))}
    specs, sources = desired(c)
    plan = plan_up("n1", specs, sources, NodeFacts(services=services, binaries={BIN: SHA, LBIN: SHA}))
    assert not plan.changes
    assert not plan.failures


def test_plan_down_stops_only_recorded_services() -> None:
    c = cluster(RPC_CHANGED)
    facts = NodeFacts(
        services={"a": running(c, "rpc"), "b": running(cluster(OLLAMA), "ollama", alive=False)},
        listeners=(Listener("10.0.0.1", 9999, 55, "rpc-server"),),  # same binary name, not ours
    )
    assert [describe(step) for step in plan_down("n1", facts).steps] == [
        "stop sollol-lab-rpc-50052 (pid 100): sollol down",
        "forget sollol-lab-ollama-11434 (not running)",
    ]


def test_rpc_protocol_mismatch_fails_only_that_node() -> None:
    from sollol_cli.provision.apply import NodeOutcome, ServiceOutcome, check_protocols

    def outcome(node: str, version: str | None) -> NodeOutcome:
        service = ServiceOutcome("sollol-lab-rpc-50052", "rpc", "10.0.0.1", 50052, "d", "process", 1, 1, version, True)
        return NodeOutcome(node, "changed", services=[service])

    same, other, busy = outcome("a", "7.0.0"), outcome("b", "6.1.0"), outcome("c", None)
    check_protocols([same, other, busy], "7.0.0")
    assert (same.status, busy.status) == ("changed", "changed")
    assert other.status == "failed"
    assert other.failures == [
        "sollol-lab-rpc-50052: rpc protocol 6.1.0 differs from the coordinator's 7.0.0; "
        "use the same llama.cpp build on every node"
    ]


COORDINATOR = RunningService("sollol-lab-coordinator-big", 300, 9, "c" * 16, "coordinator", "10.0.0.1", 41200, True)


def test_up_leaves_a_running_coordinator_alone_and_forgets_a_dead_one() -> None:
    """A sharded model's coordinator is not a manifest service: `up` must not stop a warm one."""
    c = cluster(RPC)
    specs, sources = desired(c)
    dead = RunningService("sollol-lab-coordinator-old", 301, 9, "d" * 16, "coordinator", "10.0.0.1", 41201, False)
    facts = NodeFacts(binaries={BIN: SHA}, services={s.name: s for s in (COORDINATOR, dead, running(c, "rpc"))})
    assert [describe(step) for step in plan_up("n1", specs, sources, facts).steps] == [
        "forget sollol-lab-coordinator-old (not running)",
        "keep sollol-lab-rpc-50052 on 10.0.0.1:50052 (running, up to date)",
    ]


def test_down_stops_a_coordinator_on_the_node() -> None:
    facts = NodeFacts(services={COORDINATOR.name: COORDINATOR})
    assert [describe(step) for step in plan_down("n1", facts).steps] == [
        "stop sollol-lab-coordinator-big (pid 300): sollol down"
    ]


# --- the commands the steps run on the node, as exact text ---

RUN = '"$HOME"/.sollol/lab/n1/run'


def test_up_commands() -> None:
    c = cluster(RPC)
    specs, sources = desired(c)
    steps = plan_up("n1", specs, sources, NodeFacts()).steps
    assert [command(step, "lab", "n1", "/root") for step in steps] == [
        None,  # the upload copies a file
        f'{SHELL_FUNCTIONS}mkdir -p {RUN} "$HOME"/.sollol/lab/n1/log && cd {RUN} && '
        "{ trap '' HUP; setsid nohup \"$HOME\"/.sollol/bin/rpc-server -H 10.0.0.1 -p 50052 -c "
        '>>"$HOME"/.sollol/lab/n1/log/sollol-lab-rpc-50052.log 2>&1 </dev/null & }; '
        "pid=$!; start=$(sollol_started $pid || echo 0); "
        f'echo "$pid $start {specs[0].digest} rpc 10.0.0.1 50052" > {RUN}/sollol-lab-rpc-50052.pid; echo "$pid $start"',
    ]
    systemd = plan_up("n1", specs, sources, NodeFacts(binaries={BIN: SHA}, systemd="user")).steps
    assert [command(step, "lab", "n1", "/root") for step in systemd] == [None]  # a unit file, then systemctl


def test_down_commands() -> None:
    """Each record's files go with it: only once its process is gone, and never another process's."""
    c = cluster(RPC)
    unit = RunningService("sollol-lab-ollama-11434", 0, 0, "d" * 16, "ollama", "10.0.0.1", 11434, True, "systemd-user")
    dead = RunningService("sollol-lab-coordinator-old", 301, 9, "d" * 16, "coordinator", "10.0.0.1", 41201, False)
    facts = NodeFacts(services={s.name: s for s in (running(c, "rpc"), dead, unit)})
    rpc = [f"$HOME/.sollol/lab/n1/run/sollol-lab-rpc-50052.{ext}" for ext in ("pid", "unit", "key")]
    assert [command(step, "lab", "n1", "/home/u") for step in plan_down("n1", facts).steps] == [
        f"rm -f {RUN}/sollol-lab-coordinator-old.pid {RUN}/sollol-lab-coordinator-old.unit "
        f"{RUN}/sollol-lab-coordinator-old.key",
        "systemctl --user disable --now sollol-lab-ollama-11434.service; "
        "rm -f /home/u/.config/systemd/user/sollol-lab-ollama-11434.service "
        f"{RUN}/sollol-lab-ollama-11434.pid {RUN}/sollol-lab-ollama-11434.unit {RUN}/sollol-lab-ollama-11434.key; "
        "systemctl --user daemon-reload",
        stop_text(100, 5, remove=rpc),
    ]


# --- the llama.cpp build per node: desired_on (choice from the facts) and the plan it gives ---

VSHA = "c" * 64
VBIN = "$HOME/.sollol/bin/vulkan/rpc-server"
LOADER = "/usr/lib/x86_64-linux-gnu/libvulkan.so.1"
LAVAPIPE = Accelerator(kind="vulkan", name="llvmpipe (LLVM 15.0.6, 256 bits)", driver="llvmpipe", device_type="cpu")
RADV = Accelerator(kind="vulkan", name="AMD Radeon RX 7900 XTX (RADV NAVI31)", driver="radv")
LOCAL = {
    "cpu": LocalBuild({"rpc-server": ("/cache/rpc-server", SHA), "llama-server": ("/cache/llama-server", SHA)}, "cpu 0.3.36"),
    "vulkan": LocalBuild({"rpc-server": ("/vk/rpc-server", VSHA), "llama-server": ("/vk/llama-server", VSHA)}, "vulkan 0.3.36"),
}  # fmt: skip
NO_LOADER = (
    "the node has no Vulkan loader (libvulkan.so.1): install it and a Vulkan driver "
    "(Debian: libvulkan1 mesa-vulkan-drivers), or choose another backend"
)


def backend_case(node_yaml, facts_kw, expected, *, local=LOCAL, running_as=None, **top):  # type: ignore[no-untyped-def]
    return (node_yaml, facts_kw, expected, local, running_as, top)


def _vulkan(node_yaml: dict) -> dict:
    return {**node_yaml, "llama_cpp": {"backend": "vulkan"}}


BACKEND_CASES = {
    "auto on a node without a GPU: the cpu build": backend_case(RPC, {}, [
        "llama.cpp cpu (cpu 0.3.36): auto: no GPU",
        f"upload rpc-server -> {BIN} (sha256 aaaaaaaaaaaa)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]),
    "auto on a Vulkan GPU: the vulkan build in its own directory": backend_case(
        RPC, {"accelerators": (RADV,), "vulkan_loader": LOADER}, [
        "llama.cpp vulkan (vulkan 0.3.36): auto: Vulkan GPU AMD Radeon RX 7900 XTX (RADV NAVI31)",
        f"upload rpc-server -> {VBIN} (sha256 cccccccccccc)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]),
    "vulkan asked on lavapipe (the test machine)": backend_case(
        _vulkan(RPC), {"accelerators": (LAVAPIPE,), "vulkan_loader": LOADER, "binaries": {VBIN: VSHA}}, [
        "llama.cpp vulkan (vulkan 0.3.36): vulkan (set in the manifest)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ]),
    "vulkan asked by the cluster, cpu by the node": backend_case(
        {**RPC, "llama_cpp": {"backend": "cpu"}}, {"vulkan_loader": LOADER, "binaries": {BIN: SHA}}, [
        "llama.cpp cpu (cpu 0.3.36): cpu (set in the manifest)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ], llama_cpp={"backend": "vulkan"}),
    "switch cpu -> vulkan: upload and restart": backend_case(
        _vulkan(RPC), {"vulkan_loader": LOADER, "binaries": {BIN: SHA}}, [
        "llama.cpp vulkan (vulkan 0.3.36): vulkan (set in the manifest)",
        f"upload rpc-server -> {VBIN} (sha256 cccccccccccc)",
        "stop sollol-lab-rpc-50052 (pid 100): settings changed",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: settings changed",
    ], running_as=RPC),
    "vulkan without a loader: the llama.cpp services fail, ollama still starts": backend_case(
        _vulkan({**RPC, "ollama": {}}), {"ollama_path": "/usr/bin/ollama"}, [
        "llama.cpp vulkan: vulkan (set in the manifest)",
        f"fail sollol-lab-rpc-50052: {NO_LOADER}",
        "start sollol-lab-ollama-11434 on 10.0.0.1:11434 [process]: not running",
    ]),
    "vulkan not built on the controller": backend_case(_vulkan(RPC), {"vulkan_loader": LOADER}, [
        "llama.cpp vulkan: vulkan (set in the manifest)",
        "fail sollol-lab-rpc-50052: no vulkan build of llama.cpp on the controller: "
        "run `sollol llama-cpp build --backend vulkan`",
    ], local={"cpu": LOCAL["cpu"]}),
    "cuda from the user's binaries on the nodes": backend_case(
        {**RPC, "llama_cpp": {"backend": "cuda"}},
        {"accelerators": (Accelerator(kind="cuda", name="RTX 3090"),), "binaries": {"/opt/llama/rpc-server": SHA}}, [
        "llama.cpp cuda (node_bin_dir): cuda (set in the manifest)",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: not running",
    ], local={}, llama_cpp={"node_bin_dir": "/opt/llama"}),
    "cuda without binaries for it": backend_case({**RPC, "llama_cpp": {"backend": "cuda"}}, {}, [
        "llama.cpp cuda: cuda (set in the manifest)",
        "fail sollol-lab-rpc-50052: no cuda binaries for this node: sollol builds only cpu and vulkan on the "
        "controller; build them on the node (llama_cpp.build: node) or point llama_cpp.node_bin_dir at a cuda "
        "build there",
    ]),
    "ollama only: no llama.cpp build": backend_case(OLLAMA, {"ollama_path": "/usr/bin/ollama"}, [
        "start sollol-lab-ollama-11434 on 10.0.0.1:11434 [process]: not running",
        "ensure models on sollol-lab-ollama-11434: tiny",
    ]),
}  # fmt: skip


@pytest.mark.parametrize(
    ("node_yaml", "facts_kw", "expected", "local", "running_as", "top"),
    BACKEND_CASES.values(),
    ids=BACKEND_CASES.keys(),
)
def test_plan_up_with_backend(
    node_yaml: dict, facts_kw: dict, expected: list[str], local: dict, running_as: dict | None, top: dict
) -> None:
    c = cluster(node_yaml, **top)
    services = {}
    if running_as is not None:  # the same service as `up` started it from the manifest `running_as`
        service = running(cluster(running_as), "rpc")
        services[service.name] = service
    facts = NodeFacts(services=services, **facts_kw)
    want = desired_on(c, c.nodes[0], build_sources(c.llama_cpp, local), facts)
    plan = plan_up("n1", want.services, want.sources, facts, backend=want.choice, build=want.build)
    assert [describe(step) for step in plan.steps] == expected


def test_backend_switch_back_to_cpu_restarts_and_uploads_nothing() -> None:
    """Both builds stay on the node in their own directories: switching back only restarts."""
    c = cluster(RPC)
    was_vulkan = cluster(_vulkan(RPC))
    before = desired_on(
        was_vulkan, was_vulkan.nodes[0], build_sources(c.llama_cpp, LOCAL), NodeFacts(vulkan_loader=LOADER)
    )
    (vk,) = before.services
    was = RunningService(vk.name, 100, 5, vk.digest, "rpc", vk.host, vk.port, True)
    facts = NodeFacts(services={was.name: was}, binaries={BIN: SHA, VBIN: VSHA}, vulkan_loader=LOADER)
    want = desired_on(c, c.nodes[0], build_sources(c.llama_cpp, LOCAL), facts)
    plan = plan_up("n1", want.services, want.sources, facts, backend=want.choice, build=want.build)
    assert [describe(step) for step in plan.steps] == [
        "llama.cpp cpu (cpu 0.3.36): auto: no GPU",
        "stop sollol-lab-rpc-50052 (pid 100): settings changed",
        "start sollol-lab-rpc-50052 on 10.0.0.1:50052 [process]: settings changed",
    ]
