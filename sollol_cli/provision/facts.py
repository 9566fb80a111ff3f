"""What a node looks like right now: one shell script gathers it, a pure parser reads it.

The node is the source of truth for what sollol runs there: every service sollol starts leaves a pidfile
(`pid starttime digest kind host port`) in the cluster's run directory, so a controller killed half-way
through `up` loses nothing; the next `up` (or `down`) finds the process from the node itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from sollol_cli.llamacpp.nodeplan import PROBED_TOOLS, Toolchain, cached_builds_probe
from sollol_cli.llamacpp.vulkan_headers import NEEDED_DECLARATION
from sollol_cli.provision.accelerators import (
    NVIDIA_QUERY,
    kfd_only,
    parse_nvidia_smi,
    parse_rocm_smi,
    parse_vulkaninfo_summary,
)
from sollol_cli.ssh.nodeproc import parse_pidfile, run_dir, scan_text, shell_word
from sollol_cli.state import Accelerator


@dataclass(frozen=True)
class RunningService:
    """A service recorded by a pidfile on the node."""

    name: str
    pid: int
    start_time: int
    digest: str
    kind: str
    host: str
    port: int
    alive: bool
    manager: str = "process"  # process | systemd-system | systemd-user (pid/start_time 0 for units)


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    pid: int | None
    process: str | None


@dataclass(frozen=True)
class NodeFacts:
    os: str = ""
    arch: str = ""
    hostname: str = ""
    user: str = ""
    home: str = ""
    systemd: str = "none"  # system | user | none
    cpus: int | None = None
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    accelerators: tuple[Accelerator, ...] = ()
    render_nodes: tuple[str, ...] = ()  # `renderD128 (amdgpu)`: /dev/dri render nodes and their kernel drivers
    vulkan_loader: str | None = None  # the path of libvulkan.so.1, None without a Vulkan loader
    binaries: dict[str, str] = field(default_factory=dict)  # remote path -> sha256 (absent: missing)
    files: frozenset[str] = frozenset()  # asked-for files (model GGUFs) that exist, as asked
    ollama_path: str | None = None
    ollama_version: str | None = None
    services: dict[str, RunningService] = field(default_factory=dict)
    listeners: tuple[Listener, ...] = ()
    toolchain: Toolchain = Toolchain()  # what a build on the node (`llama_cpp.build: node`) can use
    node_builds: frozenset[str] = frozenset()  # complete llama.cpp builds on the node, by key (nodeplan.py)

    def listener_on(self, host: str, port: int) -> Listener | None:
        """Who listens on host:port, counting wildcard binds (0.0.0.0 / ::) as every address."""
        for listener in self.listeners:
            if listener.port == port and listener.host in (host, "0.0.0.0", "::", "*"):
                return listener
        return None


# Each probe prints nothing when its tool or device is missing; `timeout` keeps a wedged driver from holding
# the whole facts round trip.
ACCELERATOR_PROBES = (
    "command -v nvidia-smi >/dev/null 2>&1 && timeout 10 nvidia-smi "
    f"--query-gpu={NVIDIA_QUERY} --format=csv,noheader,nounits 2>/dev/null | sed 's/^/nvidia=/'",
    "command -v rocm-smi >/dev/null 2>&1 && timeout 10 rocm-smi --showproductname --showmeminfo vram --json "
    "2>/dev/null | tr -d '\\n' | sed 's/^/rocm=/'; echo",
    "[ -e /dev/kfd ] && echo kfd=1",
    'for d in /dev/dri/renderD*; do [ -e "$d" ] || continue; n=${d##*/}; '
    'echo "dri=$n $(basename "$(readlink -f /sys/class/drm/$n/device/driver 2>/dev/null)" 2>/dev/null)"; done',
    "command -v vulkaninfo >/dev/null 2>&1 && timeout 10 vulkaninfo --summary 2>/dev/null "
    "| sed -n '/^Devices:/,$s/^/vk=/p'",
    "{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } "
    "| awk '/libvulkan\\.so\\.1 /{print \"vulkan_loader=\" $NF; exit}'",
)

# For a build on the node: its tools (the CUDA and ROCm ones also where their installers put them, off PATH),
# its GPUs' architectures, and the builds it already has.
TOOLCHAIN_PROBES = (
    f'for t in {" ".join(PROBED_TOOLS)}; do p=$(command -v "$t" 2>/dev/null) && echo "tool=$t $p"; done',
    "command -v nvcc >/dev/null 2>&1 || "
    "{ [ -x /usr/local/cuda/bin/nvcc ] && echo tool=nvcc /usr/local/cuda/bin/nvcc; }",
    'h=$(command -v hipconfig 2>/dev/null || echo /opt/rocm/bin/hipconfig); if [ -x "$h" ]; then '
    'command -v hipconfig >/dev/null 2>&1 || echo "tool=hipconfig $h"; '
    'echo "hip_clang=$("$h" -l 2>/dev/null)"; echo "hip_path=$("$h" -R 2>/dev/null)"; fi',
    "command -v nvidia-smi >/dev/null 2>&1 && timeout 10 nvidia-smi --query-gpu=compute_cap --format=csv,noheader "
    "2>/dev/null | sed 's/^/cuda_cc=/'",
    "command -v rocminfo >/dev/null 2>&1 && timeout 10 rocminfo 2>/dev/null "
    '| awk \'$1 == "Name:" && $2 ~ /^gfx[0-9a-f]+$/ {print "gfx=" $2}\'',
    f"f=/usr/include/vulkan/vulkan_structs.hpp; [ -f $f ] && {{ grep -q '{NEEDED_DECLARATION}' $f "
    "&& echo vulkan_headers=new || echo vulkan_headers=old; }",
    cached_builds_probe(),
)


def facts_script(
    cluster: str, node: str, binary_paths: list[str], ollama_binary: str | None, files: list[str] | None = None
) -> str:
    """A POSIX shell script printing `key=value` lines; every probe tolerates missing tools."""
    lines = [
        'echo "os=$(uname -s)"',
        'echo "arch=$(uname -m)"',
        'echo "hostname=$(hostname 2>/dev/null || cat /etc/hostname)"',
        'echo "user=$(id -un)"',
        'echo "home=$HOME"',
        'echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"',
        # systemd is usable as root with systemd as PID 1, or as a user with lingering enabled
        'if [ -d /run/systemd/system ]; then if [ "$(id -u)" = 0 ]; then echo systemd=system; '
        'elif loginctl show-user "$(id -un)" -p Linger 2>/dev/null | grep -q yes; then echo systemd=user; fi; fi',
        'awk \'/^MemTotal:/{print "mem_total_kb=" $2} /^MemAvailable:/{print "mem_available_kb=" $2}\' /proc/meminfo',
        *ACCELERATOR_PROBES,
        *TOOLCHAIN_PROBES,
    ]
    for path in binary_paths:
        word = shell_word(path)
        # the key keeps the path as asked ($HOME unexpanded), so the plan can look it up
        lines.append(f'[ -f {word} ] && echo {shlex.quote("bin=" + path)} "$(sha256sum {word} | cut -d" " -f1)"')
    for path in files or []:
        lines.append(f"[ -f {shell_word(path)} ] && echo {shlex.quote('file=' + path)}")
    if ollama_binary:
        word = shell_word(ollama_binary)
        lines.append(
            f'if p=$(command -v {word} 2>/dev/null); then echo "ollama_path=$p"; '
            f'echo "ollama_version=$({word} --version 2>/dev/null | head -n1)"; fi'
        )
    rundir = shell_word(run_dir(cluster, node))
    lines.append(scan_text(run_dir(cluster, node)))
    lines.append(
        f'for f in {rundir}/*.unit; do [ -f "$f" ] || continue; set -- $(cat "$f"); '
        'n=$(basename "$f" .unit); u=""; [ "$1" = systemd-user ] && u=--user; '
        'if systemctl $u is-active --quiet "$n.service" 2>/dev/null; then a=alive; else a=dead; fi; '
        'echo "unit=$n $* $a"; done'
    )
    lines.append('ss -ltnpH 2>/dev/null | awk \'{print "listen=" $4 " " $6}\'')
    return "\n".join(lines) + "\ntrue\n"


def parse_facts(text: str, home_alias: str = "$HOME") -> NodeFacts:
    """Parse the script's output. `bin=` paths keep the form they were asked with ($HOME/...)."""
    values: dict[str, str] = {}
    probes: dict[str, list[str]] = {"nvidia": [], "vk": [], "dri": [], "cuda_cc": [], "gfx": [], "nodebuild": []}
    tools: dict[str, str] = {}
    rocm = ""
    binaries: dict[str, str] = {}
    services: dict[str, RunningService] = {}
    listeners: list[Listener] = []
    files: set[str] = set()
    for raw in text.splitlines():
        key, sep, value = raw.partition("=")
        if not sep:
            continue
        if key in probes:
            probes[key].append(value)
        elif key == "tool":
            name, _, path = value.partition(" ")
            if path.strip():
                tools[name] = path.strip()
        elif key == "rocm":
            rocm += value
        elif key == "bin":
            path, _, sha = value.rpartition(" ")
            binaries[path] = sha
        elif key == "file":
            files.add(value)
        elif key == "svc":
            service = _parse_service(value)
            if service is not None:
                services[service.name] = service
        elif key == "unit":
            unit = _parse_unit(value)
            if unit is not None:
                services[unit.name] = unit
        elif key == "listen":
            listener = _parse_listener(value)
            if listener is not None:
                listeners.append(listener)
        else:
            values[key] = value
    return NodeFacts(
        os=values.get("os", ""),
        arch=values.get("arch", ""),
        hostname=values.get("hostname", ""),
        user=values.get("user", ""),
        home=values.get("home", ""),
        systemd=values.get("systemd", "none"),
        cpus=int(values["cpus"]) if values.get("cpus", "").isdigit() else None,
        mem_total_bytes=_kib(values.get("mem_total_kb")),
        mem_available_bytes=_kib(values.get("mem_available_kb")),
        accelerators=_accelerators(probes["nvidia"], rocm, values.get("kfd") == "1", probes["vk"]),
        render_nodes=tuple(_render_node(line) for line in probes["dri"] if line.strip()),
        vulkan_loader=values.get("vulkan_loader") or None,
        binaries=binaries,
        files=frozenset(files),
        ollama_path=values.get("ollama_path") or None,
        ollama_version=_ollama_version(values.get("ollama_version")),
        services=services,
        listeners=tuple(listeners),
        toolchain=Toolchain(
            tools,
            cuda_archs=tuple(cc.strip() for cc in probes["cuda_cc"] if cc.strip().replace(".", "").isdigit()),
            amd_targets=tuple(sorted({gfx.strip() for gfx in probes["gfx"]})),
            hip_clang_dir=values.get("hip_clang") or None,
            hip_path=values.get("hip_path") or None,
            vulkan_headers=values.get("vulkan_headers") or None,
        ),
        node_builds=frozenset(key.strip() for key in probes["nodebuild"]),
    )


def _accelerators(nvidia: list[str], rocm: str, kfd: bool, vulkan: list[str]) -> tuple[Accelerator, ...]:
    amd = parse_rocm_smi(rocm) if rocm.strip() else []
    if not amd and kfd:
        amd = [kfd_only()]
    return (*parse_nvidia_smi(nvidia), *amd, *parse_vulkaninfo_summary(vulkan))


def _render_node(line: str) -> str:
    """`renderD128 amdgpu` -> `renderD128 (amdgpu)`; the driver is empty where /sys does not say."""
    node, _, driver = line.strip().partition(" ")
    return f"{node} ({driver.strip()})" if driver.strip() else node


def _kib(value: str | None) -> int | None:
    return int(value) * 1024 if value and value.isdigit() else None


def _ollama_version(line: str | None) -> str | None:
    """`ollama version is 0.5.7` (also with a client/server warning before it) -> `0.5.7`."""
    if not line:
        return None
    return line.strip().rsplit(" ", 1)[-1] or None


def _parse_service(value: str) -> RunningService | None:
    """`NAME PIDFILE-LINE alive|dead` (see ssh/nodeproc.py)."""
    parts = value.split()
    line = parse_pidfile(parts[1:-1]) if len(parts) > 2 else None
    return None if line is None else RunningService(parts[0], *line, alive=parts[-1] == "alive")


def _parse_unit(value: str) -> RunningService | None:
    parts = value.split()  # name manager digest kind host port state
    if len(parts) != 7 or not parts[5].isdigit() or not parts[1].startswith("systemd-"):
        return None
    name, manager, digest, kind, host, port, state = parts
    return RunningService(name, 0, 0, digest, kind, host, int(port), state == "alive", manager)


def _parse_listener(value: str) -> Listener | None:
    """`10.0.0.1:50052 users:(("rpc-server",pid=123,fd=3))` or `[::]:22 ...` -> Listener."""
    address, _, users = value.partition(" ")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    if "%" in host:
        host = host.split("%", 1)[0]
    pid = process = None
    if "pid=" in users:
        process = users.split('"', 2)[1] if users.count('"') >= 2 else None
        digits = users.split("pid=", 1)[1].split(",", 1)[0]
        pid = int(digits) if digits.isdigit() else None
    return Listener(host, int(port), pid, process)
