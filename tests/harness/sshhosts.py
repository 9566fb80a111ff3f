"""Real OpenSSH test hosts (pytest plugin): one `sshd` per node, each a small machine of its own.

Each node runs in its own network namespace (bridge + veth, address `10.233.0.<i>/24`), with its own
hostname, `/root` (a bind-mounted temp dir), process space (killing its sshd kills everything it started),
`/etc/hosts` and `resolv.conf` (pointing at 127.0.0.1, so name lookups fail fast instead of hanging on an
unreachable nameserver). The host side of the bridge is `10.233.255.1/32` with a route to the /24, so the
/24 contains only test nodes. Host-key checking stays on: every node's key is in a test known_hosts file.

Without CAP_NET_ADMIN the harness falls back to one sshd per loopback address (127.0.0.2.., port 2222):
weaker, since nodes then share the port space (and, if `unshare` is not allowed either, the hostname and
the real /root).

Environment: SOLLOL_TEST_NODES (3), SOLLOL_TEST_SUBNET (10.233.0.0/24), SOLLOL_TEST_PREFIX (sollt; names
of namespaces, links and files), SOLLOL_TEST_HOSTS_MODE (auto | netns | loopback), SOLLOL_TEST_SSH_PORT
(loopback mode, 2222), SOLLOL_TEST_HOST_ADDRESS (host side of the bridge; derived for /24 subnets).
One run per prefix at a time (a lock file says who holds it); what a run creates is recorded in
/tmp/sollol-test-hosts-<prefix>.json, so a run killed outright is cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

import pytest

Mode = Literal["auto", "netns", "loopback"]
SSHD = "/usr/sbin/sshd"
STATE_DIR = Path("/tmp")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CLEAN_ENV = {"PATH": _PATH, "LANG": "C.UTF-8"}
_READY_TIMEOUT = 15.0


class HostsError(RuntimeError):
    """The test hosts could not be created (the message says which command failed and why)."""


class _NotPermitted(HostsError):
    """Creating namespaces or links was refused: the caller may fall back to loopback mode."""


@dataclass(frozen=True)
class HostsConfig:
    count: int = 3
    subnet: IPv4Network = IPv4Network("10.233.0.0/24")
    prefix: str = "sollt"
    mode: Mode = "auto"
    loopback_port: int = 2222
    host_address: IPv4Address | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", self.prefix):
            raise HostsError(f"test host prefix '{self.prefix}' must be 1-10 lowercase letters/digits")
        if not 1 <= self.count <= self.subnet.num_addresses - 4:
            raise HostsError(f"{self.count} test nodes do not fit into {self.subnet}")
        if self.bridge_address in self.subnet:
            raise HostsError(f"host address {self.bridge_address} must lie outside {self.subnet}")

    @classmethod
    def from_env(cls) -> HostsConfig:
        env = os.environ
        mode = env.get("SOLLOL_TEST_HOSTS_MODE", "auto")
        if mode not in ("auto", "netns", "loopback"):
            raise HostsError(f"SOLLOL_TEST_HOSTS_MODE must be auto, netns or loopback, not '{mode}'")
        host = env.get("SOLLOL_TEST_HOST_ADDRESS")
        return cls(
            count=int(env.get("SOLLOL_TEST_NODES", "3")),
            subnet=IPv4Network(env.get("SOLLOL_TEST_SUBNET", "10.233.0.0/24")),
            prefix=env.get("SOLLOL_TEST_PREFIX", "sollt"),
            mode=mode,  # type: ignore[arg-type]
            loopback_port=int(env.get("SOLLOL_TEST_SSH_PORT", "2222")),
            host_address=IPv4Address(host) if host else None,
        )

    @property
    def bridge_address(self) -> IPv4Address:
        """a.b.255.(c+1) for a.b.c.0/24: outside the subnet, so a scan of the /24 never finds the host."""
        if self.host_address is not None:
            return self.host_address
        a, b, c, _ = self.subnet.network_address.packed
        if self.subnet.prefixlen != 24 or c >= 254:
            raise HostsError(f"set SOLLOL_TEST_HOST_ADDRESS: no default host address for {self.subnet}")
        return IPv4Address(f"{a}.{b}.255.{c + 1}")

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"sollol-test-hosts-{self.prefix}.json"

    @property
    def lock_file(self) -> Path:
        return STATE_DIR / f"sollol-test-hosts-{self.prefix}.lock"


@dataclass(frozen=True)
class TestNode:
    __test__: ClassVar[bool] = False  # not a test class, even when a test module imports it

    name: str
    address: str
    port: int
    user: str
    netns: str | None  # None in loopback mode
    root_dir: Path  # the node's /root, seen from the controller
    host_key_public: str  # "ssh-ed25519 AAAA..."


@dataclass(frozen=True)
class ChangedKeyNode:
    """A live node whose entry in `known_hosts` holds another (old) key, as after a reinstall."""

    node: TestNode
    known_hosts: Path
    old_key_public: str


@dataclass
class _State:
    """What one run created; JSON in the state file so the next run can remove it after a crash."""

    prefix: str
    owner_pid: int
    work_dir: str
    mode: str = "auto"
    bridge: str | None = None
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, start time in clock ticks)


@dataclass
class _Running:
    node: TestNode
    proc: subprocess.Popen[bytes]
    log: Path


def known_hosts_line(address: str, port: int, public_key: str) -> str:
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {public_key}\n"


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=_CLEAN_ENV)
    if check and result.returncode != 0:
        message = f"`{shlex.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}"
        lowered = result.stderr.lower()
        refused = "not permitted" in lowered or "permission denied" in lowered
        raise (_NotPermitted if refused else HostsError)(message)
    return result


def _start_time(pid: int) -> int | None:
    """Start time from /proc/PID/stat (guards against PID reuse); None when gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _public_key(path: Path) -> str:
    return " ".join(path.read_text().split()[:2])


def _keygen(path: Path, comment: str) -> str:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return _public_key(path.with_name(path.name + ".pub"))


def _keyscan(address: str, port: int) -> set[str]:
    result = _run(["ssh-keyscan", "-T", "1", "-t", "ed25519", "-p", str(port), address], check=False)
    return {" ".join(parts[1:3]) for line in result.stdout.splitlines() if len(parts := line.split()) >= 3}


def _can_unshare() -> bool:
    probe = ["unshare", "--uts", "--mount", "--pid", "--fork", "--mount-proc", "true"]
    return subprocess.run(probe, capture_output=True, env=_CLEAN_ENV).returncode == 0


def _netns_pids(netns: str) -> list[int]:
    result = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in result.stdout.split()] if result.returncode == 0 else []


def _save(state: Any, path: Path) -> None:
    """A run's state (a dataclass) as JSON, replaced atomically."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state)))
    tmp.replace(path)


def _load(path: Path) -> _State | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    data["processes"] = [tuple(p) for p in data.get("processes", [])]
    return _State(**data)


def remove_created(state: _State, own: Sequence[subprocess.Popen[bytes]] = ()) -> None:
    """Remove everything `state` lists, in the order that leaves nothing behind; absent things are skipped."""
    for netns in state.netns:
        for pid in _netns_pids(netns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid, started in state.processes:
        if _start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # each sshd leads its own session (start_new_session)
    for proc in own:
        proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while any(_start_time(pid) == started for pid, started in state.processes) and time.monotonic() < deadline:
        time.sleep(0.02)
    for netns in state.netns:
        _run(["ip", "netns", "del", netns], check=False)
    for link in [*state.links, *([state.bridge] if state.bridge else [])]:
        _run(["ip", "link", "del", link], check=False)  # veths mostly vanished with their namespace
    shutil.rmtree(state.work_dir, ignore_errors=True)


def clean_stale(config: HostsConfig) -> bool:
    """Remove what a killed run with this prefix left behind (call with the lock held). True if it did."""
    state = _load(config.state_file)
    if state is None:
        return False
    remove_created(state)
    config.state_file.unlink(missing_ok=True)
    return True


def _lock(config: HostsConfig) -> IO[str]:
    return take_lock(
        config.lock_file,
        f"uses test-host prefix '{config.prefix}'; set SOLLOL_TEST_PREFIX and SOLLOL_TEST_SUBNET to run in parallel",
    )


def take_lock(path: Path, busy: str) -> IO[str]:
    """flock `path` (released when the returned file is closed, or the process dies) and write our pid into
    it; if another run holds it: HostsError "another test run (pid N) <busy>"."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise HostsError(f"another test run (pid {owner}) {busy}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class TestHosts:
    """The running nodes plus what tests need to reach them. Create with `start_test_hosts`."""

    __test__: ClassVar[bool] = False

    def __init__(self, config: HostsConfig, lock: IO[str]) -> None:
        self.config = config
        self._lock = lock
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"sollol-test-hosts-{config.prefix}-", dir=STATE_DIR))
        self._state = _State(prefix=config.prefix, owner_pid=os.getpid(), work_dir=str(self.work_dir))
        self.mode: Literal["netns", "loopback"] = "netns"
        self.isolated = True  # own hostname, /root and process space per node
        self._running: dict[str, _Running] = {}
        self._spawned: list[subprocess.Popen[bytes]] = []
        self._next_index = 1
        self.nodes: tuple[TestNode, ...] = ()
        self.client_key = self.work_dir / "client_key"
        self.known_hosts = self.work_dir / "known_hosts"
        self.start_seconds = 0.0
        self._hosts_file = self.work_dir / "etc-hosts"
        self._resolv = self.work_dir / "resolv.conf"
        self._closed = False

    # ----- life cycle -------------------------------------------------------------------------------------

    def _start(self) -> None:
        started = time.monotonic()
        _save(self._state, self.config.state_file)
        if not Path(SSHD).exists():
            raise HostsError(f"{SSHD} is missing: install openssh-server (apt-get install openssh-server)")
        if os.geteuid() == 0:  # privilege separation directory; sshd refuses to start as root without it
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self.client_public_key = _keygen(self.client_key, "sollol-test-client")
        self._resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.known_hosts.write_text("")
        self.mode = "loopback" if self.config.mode == "loopback" else "netns"
        if self.mode == "netns":
            try:
                self._create_bridge()
            except _NotPermitted:
                if self.config.mode == "netns":
                    raise
                self.mode = "loopback"
        self._state.mode = self.mode
        if self.mode == "loopback":
            self.isolated = _can_unshare()
        names = [f"node{i}" for i in range(1, self.config.count + 1)]
        self._write_hosts_file([*names])
        runs = [self._launch(name) for name in names]
        deadline = time.monotonic() + _READY_TIMEOUT
        for run in runs:
            self._wait_ready(run, deadline)
        self.nodes = tuple(run.node for run in runs)
        with self.known_hosts.open("a") as out:
            out.writelines(known_hosts_line(n.address, n.port, n.host_key_public) for n in self.nodes)
        self.start_seconds = time.monotonic() - started

    def close(self) -> float:
        """Stop every node and remove all that was created; returns the seconds it took."""
        if self._closed:
            return 0.0
        started = time.monotonic()
        self._closed = True
        try:
            remove_created(self._state, [*(r.proc for r in self._running.values()), *self._spawned])
            self.config.state_file.unlink(missing_ok=True)
        finally:
            self._lock.close()  # releases the flock
        return time.monotonic() - started

    def __enter__(self) -> TestHosts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----- network ----------------------------------------------------------------------------------------

    def _create_bridge(self) -> None:
        subnet, host = self.config.subnet, self.config.bridge_address
        if _run(["ip", "route", "show", str(subnet)], check=False).stdout.strip():
            raise HostsError(f"{subnet} is already routed here (another run?); set SOLLOL_TEST_SUBNET")
        bridge = f"{self.config.prefix}-br"
        self._state.bridge = bridge
        _save(self._state, self.config.state_file)
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{host}/32", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        _run(["ip", "route", "add", str(subnet), "dev", bridge, "src", str(host)])

    def _create_netns(self, index: int, address: IPv4Address) -> str:
        netns, veth = f"{self.config.prefix}-n{index}", f"{self.config.prefix}-v{index}"
        self._state.netns.append(netns)
        self._state.links.append(veth)
        _save(self._state, self.config.state_file)
        _run(["ip", "netns", "add", netns])
        _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
        _run(["ip", "link", "set", veth, "master", f"{self.config.prefix}-br", "up"])
        inside = ["ip", "-n", netns]
        _run([*inside, "addr", "add", f"{address}/{self.config.subnet.prefixlen}", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        _run([*inside, "link", "set", "lo", "up"])
        _run([*inside, "route", "add", f"{self.config.bridge_address}/32", "dev", "eth0"])
        return netns

    def _address(self, index: int) -> IPv4Address:
        if self.mode == "loopback":
            return IPv4Address(f"127.0.0.{index + 1}")
        return self.config.subnet.network_address + index

    def _write_hosts_file(self, names: Sequence[str]) -> None:
        """One file bind-mounted as every node's /etc/hosts; rewritten in place so all nodes see updates."""
        known = {run.node.name: run.node.address for run in self._running.values()}
        for i, name in enumerate(names, start=self._next_index):
            known.setdefault(name, str(self._address(i)))
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        lines += [f"{address} {name}" for name, address in sorted(known.items())]
        with self._hosts_file.open("w") as out:  # same inode: the bind mounts follow
            out.write("\n".join(lines) + "\n")

    # ----- nodes ------------------------------------------------------------------------------------------

    def _launch(self, name: str) -> _Running:
        index = self._next_index
        self._next_index += 1
        address = self._address(index)
        port = self.config.loopback_port if self.mode == "loopback" else 22
        node_dir = self.work_dir / name
        root_dir = node_dir / "root"
        root_dir.mkdir(parents=True, mode=0o700)
        host_key = _keygen(node_dir / "host_key", name)
        (node_dir / "authorized_keys").write_text(self.client_public_key + "\n")
        config = node_dir / "sshd_config"
        config.write_text(_sshd_config(node_dir, str(address), port))
        if not self._running:  # the config is the same template for every node: validate it once
            _run([SSHD, "-t", "-f", str(config)])
        netns = self._create_netns(index, address) if self.mode == "netns" else None
        user = "root" if self.isolated else getpass.getuser()  # unisolated: sshd can only log in as us
        node = TestNode(name, str(address), port, user, netns, root_dir, host_key)
        log = node_dir / "sshd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self._start_command(node, config),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_CLEAN_ENV,
            )
        self._state.processes.append((proc.pid, _start_time(proc.pid) or 0))
        _save(self._state, self.config.state_file)
        run = _Running(node, proc, log)
        self._running[name] = run
        return run

    def _start_command(self, node: TestNode, config: Path) -> list[str]:
        sshd = f"exec {SSHD} -D -e -f {shlex.quote(str(config))}"
        if not self.isolated:
            return ["sh", "-c", sshd]
        script = " && ".join(
            [
                f"hostname {node.name}",
                *_python_binds(node.root_dir),
                *_ccache_bind(node.root_dir),
                f"mount --rbind {shlex.quote(str(node.root_dir))} /root",  # rbind: with the python binds
                f"mount --bind {shlex.quote(str(self._hosts_file))} /etc/hosts",
                f"mount --bind {shlex.quote(str(self._resolv))} /etc/resolv.conf",
                sshd,
            ]
        )
        unshare = ["unshare", "--uts", "--mount", "--propagation", "private", "--pid", "--fork"]
        unshare += ["--mount-proc", "--kill-child=SIGKILL", "sh", "-c", script]
        return ["ip", "netns", "exec", node.netns, *unshare] if node.netns else unshare

    def _wait_ready(self, run: _Running, deadline: float) -> None:
        """Ready = sshd alive and answering with *its own* host key (a port check is fooled by others)."""
        while True:
            if run.proc.poll() is not None:
                raise HostsError(f"sshd of {run.node.name} exited ({run.proc.returncode}): {self._log_tail(run)}")
            if run.node.host_key_public in _keyscan(run.node.address, run.node.port):
                return
            if time.monotonic() > deadline:
                raise HostsError(f"sshd of {run.node.name} did not answer in time: {self._log_tail(run)}")
            time.sleep(0.02)

    @staticmethod
    def _log_tail(run: _Running) -> str:
        return " | ".join(run.log.read_text(errors="replace").strip().splitlines()[-5:]) or "(no output)"

    def node(self, name: str) -> TestNode:
        return self._running[name].node

    def add_node(self, name: str | None = None, *, record_key: bool = True) -> TestNode:
        """Start one more node (next free address). `record_key=False` leaves it out of `known_hosts`."""
        name = name or f"node{self._next_index}"
        self._write_hosts_file([name])
        run = self._launch(name)
        self._wait_ready(run, time.monotonic() + _READY_TIMEOUT)
        if record_key:
            with self.known_hosts.open("a") as out:
                out.write(known_hosts_line(run.node.address, run.node.port, run.node.host_key_public))
        return run.node

    def stop_node(self, node: TestNode) -> None:
        """Kill a node's sshd and everything it started (the node's address stays configured)."""
        run = self._running[node.name]
        pids = _netns_pids(node.netns) if node.netns else []
        for pid in [run.proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL) if pid == run.proc.pid else os.kill(pid, signal.SIGKILL)
        run.proc.wait(timeout=10)

    def unused_address(self) -> str:
        """An address in the test subnet (loopback mode: in 127/8) where no node lives."""
        if self.mode == "loopback":
            return "127.0.0.254"
        return str(self.config.subnet.broadcast_address - 1)

    def new_host_key(self, directory: Path) -> str:
        """A fresh ed25519 public key no node uses, e.g. the 'old' key of a reinstalled node."""
        return _keygen(Path(tempfile.mkdtemp(dir=directory)) / "key", "old-host-key")

    # ----- entering nodes without sollol ------------------------------------------------------------------

    def _init_pid(self, node: TestNode) -> int:
        """The node's sshd: PID 1 of its process namespace, child of the `unshare` we started."""
        outer = self._running[node.name].proc.pid
        children = Path(f"/proc/{outer}/task/{outer}/children").read_text().split()
        if not children:
            raise HostsError(f"{node.name} is not running")
        return int(children[0])

    def _enter(self, node: TestNode, command: str) -> list[str]:
        home = "/root" if self.isolated else str(node.root_dir)
        shell = ["sh", "-c", f"cd {shlex.quote(home)} || exit 1\n{command}"]
        if not self.isolated:
            return shell
        spaces = ["-n", "-u", "-m", "-p"] if node.netns else ["-u", "-m", "-p"]
        return ["nsenter", "-t", str(self._init_pid(node)), *spaces, *shell]

    def exec_in(
        self, node: TestNode, command: str, *, timeout: float = 30.0, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the node (its network, hostname, /root and processes), bypassing SSH."""
        env = {**_CLEAN_ENV, "HOME": "/root", "USER": "root", "LOGNAME": "root"}
        argv = self._enter(node, command)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input)
        if check and result.returncode != 0:
            raise HostsError(f"{node.name}: `{command}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def spawn_in(self, node: TestNode, command: str, *, log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running process on the node; it is killed with the node at teardown."""
        env = {**_CLEAN_ENV, "HOME": "/root", "USER": "root", "LOGNAME": "root"}
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self._enter(node, command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self._spawned.append(proc)
        self._state.processes.append((proc.pid, _start_time(proc.pid) or 0))
        _save(self._state, self.config.state_file)
        return proc

    # ----- manifests --------------------------------------------------------------------------------------

    def manifest_yaml(
        self,
        roles_by_node: Mapping[str, str] | None = None,
        *,
        name: str = "lab",
        nodes: Sequence[TestNode] | None = None,
        known_hosts: Path | None = None,
        host_key_policy: str = "strict",
        connect_timeout: float = 5.0,
        extra: str = "",
    ) -> str:
        """A cluster.yaml for these nodes; roles are YAML snippets per node name, e.g. {"node1": "rpc: {}"}."""
        return manifest_yaml(
            list(self.nodes if nodes is None else nodes),
            roles_by_node,
            self.client_key,
            known_hosts or self.known_hosts,
            name=name,
            host_key_policy=host_key_policy,
            connect_timeout=connect_timeout,
            extra=extra,
        )


def manifest_yaml(
    nodes: Sequence[TestNode],
    roles_by_node: Mapping[str, str] | None,
    client_key: Path,
    known_hosts: Path,
    *,
    name: str = "lab",
    host_key_policy: str = "strict",
    connect_timeout: float = 5.0,
    extra: str = "",
) -> str:
    """A cluster.yaml for `nodes` (all logged into as the first one's user); roles are YAML snippets per
    node name, e.g. {"node1": "rpc: {}"}."""
    roles = dict(roles_by_node or {})
    unknown = set(roles) - {n.name for n in nodes}
    if unknown:
        raise ValueError(f"roles for unknown nodes: {sorted(unknown)}")
    lines = [
        f"name: {name}",
        "ssh:",
        f"  user: {nodes[0].user if nodes else 'root'}",
        f"  port: {nodes[0].port if nodes else 22}",
        f"  identity_file: {client_key}",
        f"  known_hosts: {known_hosts}",
        f"  host_key_policy: {host_key_policy}",
        f"  connect_timeout: {connect_timeout}",
        "nodes:",
    ]
    for node in nodes:
        lines += [f"  - name: {node.name}", f"    address: {node.address}"]
        snippet = textwrap.dedent(roles.get(node.name, "")).strip()
        if snippet:
            lines.append(textwrap.indent(snippet, "    "))
    text = "\n".join(lines) + "\n"
    return text + textwrap.dedent(extra).strip() + "\n" if extra.strip() else text


def _sshd_config(node_dir: Path, address: str, port: int) -> str:
    return textwrap.dedent(
        f"""\
        ListenAddress {address}
        Port {port}
        HostKey {node_dir / "host_key"}
        PidFile {node_dir / "sshd.pid"}
        AuthorizedKeysFile {node_dir / "authorized_keys"}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        StrictModes no
        UseDNS no
        PermitRootLogin prohibit-password
        Subsystem sftp internal-sftp
        MaxStartups 100:30:200
        MaxSessions 64
        PrintMotd no
        X11Forwarding no
        """
    )


def _python_binds(root_dir: Path) -> list[str]:
    """The test interpreter (and its venv) may live under /root, which each node replaces with its own:
    bind those directories into the node's /root (inside its private mount namespace only), so test
    programs put on a node (the Ollama stand-in) run with the same Python."""
    home = Path("/root")
    wanted = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    commands = []
    for path in sorted(wanted):
        if path == home or home not in path.parents:
            continue
        inside = root_dir / path.relative_to(home)
        inside.mkdir(parents=True, exist_ok=True)
        commands.append(f"mount --bind {shlex.quote(str(path))} {shlex.quote(str(inside))}")
    return commands


# A compiler cache kept across runs (CI keeps ~/.cache/sollol), seen by every node at the same place in its own
# /root: builds on the nodes (`llama_cpp.build: node`) still run there, but a warm run compiles from the cache.
CCACHE_DIR = Path("/root/.cache/sollol/ccache")


def _ccache_bind(root_dir: Path) -> list[str]:
    inside = root_dir / CCACHE_DIR.relative_to("/root")
    CCACHE_DIR.mkdir(parents=True, exist_ok=True)
    inside.mkdir(parents=True, exist_ok=True)
    return [f"mount --bind {shlex.quote(str(CCACHE_DIR))} {shlex.quote(str(inside))}"]


def start_test_hosts(config: HostsConfig | None = None) -> TestHosts:
    """Clean up after a killed run with the same prefix, then start `config.count` nodes."""
    config = config or HostsConfig.from_env()
    lock = _lock(config)
    try:
        clean_stale(config)
        hosts = TestHosts(config, lock)
    except BaseException:
        lock.close()
        raise
    try:
        hosts._start()
    except BaseException:
        hosts.close()
        raise
    return hosts


@pytest.fixture(scope="session")
def ssh_nodes() -> Iterator[TestHosts]:
    """N real sshd hosts (SOLLOL_TEST_NODES, default 3) named node1..N, shared by the whole session."""
    with start_test_hosts(HostsConfig.from_env()) as hosts:
        yield hosts


@pytest.fixture
def unreachable_address(ssh_nodes: TestHosts) -> str:
    """An address inside the test subnet where nothing answers (connects there time out)."""
    return ssh_nodes.unused_address()


@pytest.fixture
def changed_key_node(ssh_nodes: TestHosts, tmp_path: Path) -> Iterator[ChangedKeyNode]:
    """A node reinstalled with a new host key while the known_hosts file still has the old one."""
    node = ssh_nodes.add_node(record_key=False)
    old_key = ssh_nodes.new_host_key(tmp_path)
    known_hosts = tmp_path / "known_hosts_with_old_key"
    known_hosts.write_text(known_hosts_line(node.address, node.port, old_key))
    yield ChangedKeyNode(node, known_hosts, old_key)
    ssh_nodes.stop_node(node)
