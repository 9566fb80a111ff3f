"""Real systemd test nodes (pytest plugin): `systemd-nspawn` containers booting a real systemd as PID 1.

The machines that run the tests have no systemd, so sollol's systemd path (system units as root, user
units for a lingering user) is tested inside containers (facts: shared/reference/systemd-nodes.md):

- one root filesystem (debootstrap minbase + systemd, dbus, openssh-server, ...), built once per machine and
  cached under ~/.cache/sollol/nspawn/ by what goes into it (suite, include list, recipe version); the
  Debian mirror is the one apt already uses here (read from /etc/apt at build time, never written down);
- per node an overlayfs copy of it, with its own hostname, machine id, host key, static address on
  `host0` (systemd-networkd) and the test client key in root's and the lingering user's authorized_keys;
- booted with `systemd-nspawn -b --register=no --keep-unit` (there is no host systemd to register with),
  each in its own cgroup (named after the node, in the v1 `name=systemd` and the unified hierarchy) so
  containers do not see each other's units, on a bridge whose host side has an address in the subnet;
- ready = `systemctl is-system-running` says running (or degraded) and sshd answers with the node's key.

Environment: SOLLOL_TEST_SYSTEMD_NODES (2), SOLLOL_TEST_SYSTEMD_SUBNET (10.233.128.0/24), and
SOLLOL_TEST_PREFIX (sollt) as for the namespace hosts. One run per prefix at a time (lock file); what a run
creates is recorded in /tmp/sollol-test-systemd-<prefix>.json, so a run killed outright is cleaned up by the
next one. `python -m tests.harness.systemdnodes build` builds the root filesystem (what `.ci/run` does).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest

from sollol_cli.llamacpp import apt
from sollol_cli.settings import Settings
from tests.harness.sshhosts import (
    HostsError,
    TestNode,
    _keygen,
    _keyscan,
    _run,
    _save,
    known_hosts_line,
    manifest_yaml,
    take_lock,
)

STATE_DIR = Path("/tmp")
NODE_USER = "tester"  # the lingering non-root user on every node
ROOTFS_INCLUDE = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "libpam-systemd", "procps")
_RECIPE = 1  # bump when _configure_root changes what the cached root holds
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CLEAN_ENV = {"PATH": _PATH, "LANG": "C.UTF-8"}
_CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
_BOOT_TIMEOUT = 60.0
_POWEROFF_TIMEOUT = 30.0


# ----- the cached root filesystem ---------------------------------------------------------------------


def host_suite() -> str:
    """The Debian release of this machine (the containers run the same one)."""
    suite = apt.host_suite()
    if suite is None:
        raise HostsError("cannot tell the Debian release from /etc/os-release (VERSION_CODENAME)")
    return suite


def apt_mirror(suite: str, etc_apt: Path = apt.ETC_APT) -> str:
    """The mirror apt already uses for `suite`."""
    mirror = apt.apt_mirror(suite, etc_apt)
    if mirror is None:
        raise HostsError(f"no apt source for '{suite}' in {etc_apt}: cannot tell which mirror debootstrap should use")
    return mirror


def rootfs_dir(suite: str | None = None) -> Path:
    """Where the root filesystem for this recipe lives (named by what goes into it)."""
    suite = suite or host_suite()
    key = hashlib.sha256(json.dumps([suite, "minbase", ROOTFS_INCLUDE, NODE_USER, _RECIPE]).encode()).hexdigest()
    return Settings().cache_dir / "nspawn" / f"rootfs-{suite}-{key[:12]}"


def ensure_rootfs(log: IO[str] | None = None) -> tuple[Path, float]:
    """The cached root filesystem, built first if missing (~90 s); returns (path, seconds spent building)."""
    root = rootfs_dir()
    if (root / "etc" / "sollol-test-rootfs").exists():
        return root, 0.0
    for tool in ("debootstrap", "systemd-nspawn"):
        if shutil.which(tool, path=_PATH) is None:
            raise HostsError(f"{tool} is missing: apt-get install debootstrap systemd-container")
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / "build.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now: wait for it
        if (root / "etc" / "sollol-test-rootfs").exists():
            return root, 0.0
        started = time.monotonic()
        suite = host_suite()
        tmp = root.with_name(root.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(ROOTFS_INCLUDE)}", suite, str(tmp)]
        argv.append(apt_mirror(suite))
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=_CLEAN_ENV, timeout=1800)
        if result.returncode != 0:
            raise HostsError(f"`{shlex.join(argv)}` failed ({result.returncode}); see debootstrap's output")
        _configure_root(tmp)
        tmp.rename(root)
        return root, time.monotonic() - started


def _configure_root(root: Path) -> None:
    """What every node shares: sshd and networkd enabled, no host keys (each node gets its own), and a
    non-root user with lingering on (what `loginctl enable-linger` does)."""
    script = f"""
set -e
systemctl enable systemd-networkd ssh
rm -f /etc/ssh/ssh_host_*
useradd -m -s /bin/bash {NODE_USER}
usermod -p '*' {NODE_USER}
mkdir -p /var/lib/systemd/linger /root/.ssh /home/{NODE_USER}/.ssh
touch /var/lib/systemd/linger/{NODE_USER}
chmod 700 /root/.ssh /home/{NODE_USER}/.ssh
chown {NODE_USER}: /home/{NODE_USER}/.ssh
"""
    _run(["chroot", str(root), "sh", "-c", script])
    (root / "etc/ssh/sshd_config.d/sollol-test.conf").write_text(
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UseDNS no\nPermitRootLogin prohibit-password\nMaxStartups 100:30:200\nMaxSessions 64\n"
    )
    (root / "etc/sollol-test-rootfs").write_text(json.dumps({"include": ROOTFS_INCLUDE, "recipe": _RECIPE}) + "\n")


# ----- configuration and state ------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemdConfig:
    count: int = 2
    subnet: IPv4Network = IPv4Network("10.233.128.0/24")
    prefix: str = "sollt"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", self.prefix):
            raise HostsError(f"test host prefix '{self.prefix}' must be 1-10 lowercase letters/digits")
        if not 1 <= self.count <= self.subnet.num_addresses - 3:
            raise HostsError(f"{self.count} systemd test nodes do not fit into {self.subnet}")

    @classmethod
    def from_env(cls) -> SystemdConfig:
        env = os.environ
        return cls(
            count=int(env.get("SOLLOL_TEST_SYSTEMD_NODES", "2")),
            subnet=IPv4Network(env.get("SOLLOL_TEST_SYSTEMD_SUBNET", "10.233.128.0/24")),
            prefix=env.get("SOLLOL_TEST_PREFIX", "sollt"),
        )

    @property
    def host_address(self) -> IPv4Address:
        """The bridge's address: the subnet's last usable one (nodes count up from the first)."""
        return self.subnet.broadcast_address - 1

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-sbr"

    @property
    def state_file(self) -> Path:
        return STATE_DIR / f"sollol-test-systemd-{self.prefix}.json"

    @property
    def lock_file(self) -> Path:
        return STATE_DIR / f"sollol-test-systemd-{self.prefix}.lock"


@dataclass
class _State:
    """What one run created; JSON in the state file so the next run can remove it after a crash."""

    prefix: str
    owner_pid: int
    work_dir: str
    bridge: str | None = None
    cgroups: list[str] = field(default_factory=list)  # names below each hierarchy in _CGROUP_HIERARCHIES
    mounts: list[str] = field(default_factory=list)


def _load(path: Path) -> _State | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return _State(**data)
    except (OSError, ValueError, TypeError):
        return None


def _cgroup_pids(name: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in _CGROUP_HIERARCHIES:
        for procs in (hierarchy / name).rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def _remove_cgroup(name: str) -> None:
    for hierarchy in _CGROUP_HIERARCHIES:
        top = hierarchy / name
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def remove_created(state: _State) -> None:
    """Kill what is left in each node's cgroup, unmount the overlays, remove cgroups, bridge and files."""
    deadline = time.monotonic() + 10
    while any(_cgroup_pids(name) for name in state.cgroups) and time.monotonic() < deadline:
        for name in state.cgroups:
            for pid in _cgroup_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    for mount in reversed(state.mounts):
        _run(["umount", mount], check=False)
    for name in state.cgroups:
        _remove_cgroup(name)
    if state.bridge:
        _run(["ip", "link", "del", state.bridge], check=False)
    shutil.rmtree(state.work_dir, ignore_errors=True)


def clean_stale(config: SystemdConfig) -> bool:
    state = _load(config.state_file)
    if state is None:
        return False
    remove_created(state)
    config.state_file.unlink(missing_ok=True)
    return True


def _lock(config: SystemdConfig) -> IO[str]:
    return take_lock(
        config.lock_file,
        f"uses systemd test nodes with prefix '{config.prefix}'; "
        "set SOLLOL_TEST_PREFIX and SOLLOL_TEST_SYSTEMD_SUBNET to run in parallel",
    )


# ----- the nodes --------------------------------------------------------------------------------------


@dataclass
class _Booted:
    node: TestNode
    machine: str  # nspawn machine name = cgroup name
    merged: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None


class SystemdNodes:
    """Booted systemd nodes and what tests need to reach them. Create with `start_systemd_nodes`."""

    __test__: ClassVar[bool] = False

    def __init__(self, config: SystemdConfig, lock: IO[str], rootfs: Path) -> None:
        self.config = config
        self.rootfs = rootfs
        self._lock = lock
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"sollol-test-systemd-{config.prefix}-", dir=STATE_DIR))
        self._state = _State(prefix=config.prefix, owner_pid=os.getpid(), work_dir=str(self.work_dir))
        self._booted: dict[str, _Booted] = {}
        self.nodes: tuple[TestNode, ...] = ()
        self.client_key = self.work_dir / "client_key"
        self.known_hosts = self.work_dir / "known_hosts"
        self.start_seconds = 0.0
        self._closed = False

    def _start(self) -> None:
        started = time.monotonic()
        _save(self._state, self.config.state_file)
        _keygen(self.client_key, "sollol-test-client")
        self._create_bridge()
        names = [f"sd{i}" for i in range(1, self.config.count + 1)]
        booted = [self._prepare(i, name, names) for i, name in enumerate(names, start=1)]
        for boot in booted:
            self._boot(boot)
        deadline = time.monotonic() + _BOOT_TIMEOUT
        for boot in booted:
            self._wait_ready(boot, deadline)
        self.nodes = tuple(boot.node for boot in booted)
        self.known_hosts.write_text("".join(known_hosts_line(n.address, n.port, n.host_key_public) for n in self.nodes))
        self.start_seconds = time.monotonic() - started

    def close(self) -> float:
        """Power every node off, then remove all that was created; returns the seconds it took."""
        if self._closed:
            return 0.0
        started = time.monotonic()
        self._closed = True
        try:
            running = [boot for boot in self._booted.values() if boot.proc is not None and boot.proc.poll() is None]
            for boot in running:
                self._signal_poweroff(boot)
            for boot in running:
                self._wait_exit(boot)
            remove_created(self._state)
            self.config.state_file.unlink(missing_ok=True)
        finally:
            self._lock.close()
        return time.monotonic() - started

    def __enter__(self) -> SystemdNodes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create_bridge(self) -> None:
        subnet, bridge = self.config.subnet, self.config.bridge
        if _run(["ip", "route", "show", str(subnet)], check=False).stdout.strip():
            raise HostsError(f"{subnet} is already routed here (another run?); set SOLLOL_TEST_SYSTEMD_SUBNET")
        self._state.bridge = bridge
        _save(self._state, self.config.state_file)
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{self.config.host_address}/{subnet.prefixlen}", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])

    def _prepare(self, index: int, name: str, all_names: Sequence[str]) -> _Booted:
        """An overlay of the cached root with this node's identity, address and keys written into it."""
        machine = f"{self.config.prefix}-{name}"
        node_dir = self.work_dir / name
        upper, work, merged = node_dir / "upper", node_dir / "work", node_dir / "root"
        for directory in (upper, work, merged):
            directory.mkdir(parents=True)
        self._state.mounts.append(str(merged))
        _save(self._state, self.config.state_file)
        options = f"lowerdir={self.rootfs},upperdir={upper},workdir={work}"
        _run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)])
        address = self.config.subnet.network_address + index
        prefixlen = self.config.subnet.prefixlen
        (merged / "etc/hostname").write_text(name + "\n")
        (merged / "etc/machine-id").write_text(_run(["systemd-id128", "new"]).stdout.strip() + "\n")
        hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        hosts += [f"{self.config.subnet.network_address + i} {n}" for i, n in enumerate(all_names, start=1)]
        (merged / "etc/hosts").write_text("\n".join(hosts) + "\n")
        (merged / "etc/resolv.conf").unlink(missing_ok=True)
        (merged / "etc/resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (merged / "etc/systemd/network/10-host0.network").write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={address}/{prefixlen}\nLinkLocalAddressing=no\n"
        )
        host_key = merged / "etc/ssh/ssh_host_ed25519_key"
        public = _keygen(host_key, name)
        client = self.client_key.with_name(self.client_key.name + ".pub").read_text()
        for home in (merged / "root", merged / "home" / NODE_USER):
            keys = home / ".ssh" / "authorized_keys"
            keys.write_text(client)
            os.chown(keys, (home / ".ssh").stat().st_uid, (home / ".ssh").stat().st_gid)
            keys.chmod(0o600)
        node = TestNode(name, str(address), 22, "root", None, merged / "root", public)
        boot = _Booted(node, machine, merged, node_dir / "nspawn.log")
        self._booted[name] = boot
        return boot

    def _boot(self, boot: _Booted) -> None:
        """Start nspawn from a shell that first moves itself into the node's own cgroups."""
        if boot.machine not in self._state.cgroups:
            self._state.cgroups.append(boot.machine)
            _save(self._state, self.config.state_file)
        _remove_cgroup(boot.machine)  # left over from an earlier boot of the same node
        enter = " && ".join(
            f"mkdir -p {h / boot.machine} && echo $$ > {h / boot.machine / 'cgroup.procs'}" for h in _CGROUP_HIERARCHIES
        )
        nspawn = [
            "systemd-nspawn", "-b", "-D", str(boot.merged), "--register=no", "--keep-unit",
            "-M", boot.machine, f"--network-bridge={self.config.bridge}", "--console=read-only",
            "--resolv-conf=off", "--timezone=off",
        ]  # fmt: skip
        with boot.log.open("ab") as out:
            boot.proc = subprocess.Popen(
                ["sh", "-c", f"{enter} && exec {shlex.join(nspawn)}"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_CLEAN_ENV,
            )

    def _leader(self, boot: _Booted) -> int | None:
        """The container's PID 1 (systemd), seen from here: the nspawn process's child."""
        if boot.proc is None or boot.proc.poll() is not None:
            return None
        pid = boot.proc.pid
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
        return None

    def _wait_ready(self, boot: _Booted, deadline: float) -> None:
        state = "not started"
        while True:
            if boot.proc is None or boot.proc.poll() is not None:
                raise HostsError(f"systemd-nspawn of {boot.node.name} exited: {self._log_tail(boot)}")
            leader = self._leader(boot)
            if leader is not None:
                check = ["nsenter", "-t", str(leader), "-a", "systemctl", "is-system-running"]
                state = _run(check, check=False, timeout=10).stdout.strip()
                if state in ("running", "degraded") and boot.node.host_key_public in _keyscan(boot.node.address, 22):
                    return
            if time.monotonic() > deadline:
                raise HostsError(f"{boot.node.name} did not boot in time (system {state}): {self._log_tail(boot)}")
            time.sleep(0.05)

    @staticmethod
    def _log_tail(boot: _Booted) -> str:
        return " | ".join(boot.log.read_text(errors="replace").strip().splitlines()[-8:]) or "(no output)"

    def _signal_poweroff(self, boot: _Booted) -> None:
        leader = self._leader(boot)
        if leader is not None:  # SIGRTMIN+4 asks systemd for a clean poweroff
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader, signal.SIGRTMIN + 4)

    def _wait_exit(self, boot: _Booted) -> None:
        assert boot.proc is not None
        try:
            boot.proc.wait(timeout=_POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in _cgroup_pids(boot.machine):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            boot.proc.wait(timeout=10)

    # ----- what tests do with nodes -----------------------------------------------------------------------

    def node(self, name: str) -> TestNode:
        return self._booted[name].node

    def root_of(self, node: TestNode) -> Path:
        """The node's `/`, seen from here (its overlay)."""
        return self._booted[node.name].merged

    def as_user(self, node: TestNode) -> TestNode:
        """The same node, logged into as the lingering non-root user."""
        return replace(node, user=NODE_USER, root_dir=self._booted[node.name].merged / "home" / NODE_USER)

    def reboot(self, node: TestNode) -> float:
        """Power the node off and boot the same overlay again; returns the seconds until it is ready."""
        started = time.monotonic()
        boot = self._booted[node.name]
        self._signal_poweroff(boot)
        self._wait_exit(boot)
        self._boot(boot)
        self._wait_ready(boot, time.monotonic() + _BOOT_TIMEOUT)
        return time.monotonic() - started

    def exec_in(
        self, node: TestNode, command: str, *, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root inside the node (all its namespaces), bypassing SSH."""
        leader = self._leader(self._booted[node.name])
        if leader is None:
            raise HostsError(f"{node.name} is not running")
        argv = ["nsenter", "-t", str(leader), "-a", "sh", "-c", command]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_CLEAN_ENV)
        if check and result.returncode != 0:
            raise HostsError(f"{node.name}: `{command}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def manifest_yaml(
        self, roles_by_node: dict[str, str], *, user: str = "root", name: str = "lab", extra: str = ""
    ) -> str:
        nodes = [n if user == "root" else self.as_user(n) for n in self.nodes]
        return manifest_yaml(nodes, roles_by_node, self.client_key, self.known_hosts, name=name, extra=extra)


def start_systemd_nodes(config: SystemdConfig | None = None) -> SystemdNodes:
    """Build (or find) the root filesystem, clean up after a killed run with this prefix, boot the nodes."""
    config = config or SystemdConfig.from_env()
    if os.geteuid() != 0:
        raise HostsError("systemd test nodes need root (overlay mounts, cgroups, bridges)")
    rootfs, _ = ensure_rootfs(log=sys.stderr)
    lock = _lock(config)
    try:
        clean_stale(config)
        nodes = SystemdNodes(config, lock, rootfs)
    except BaseException:
        lock.close()
        raise
    try:
        nodes._start()
    except BaseException:
        nodes.close()
        raise
    return nodes


@pytest.fixture(scope="module")
def systemd_nodes() -> Iterator[SystemdNodes]:
    """N booted systemd nodes (SOLLOL_TEST_SYSTEMD_NODES, default 2) named sd1..N, shared by a module."""
    with start_systemd_nodes() as nodes:
        yield nodes


def main(argv: Sequence[str]) -> int:
    """`build`: make sure the root filesystem is cached (prints where, and how long building took)."""
    if list(argv) != ["build"]:
        print("usage: python -m tests.harness.systemdnodes build", file=sys.stderr)
        return 2
    try:
        root, seconds = ensure_rootfs(log=sys.stderr)
    except HostsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"systemd test root filesystem: {root}" + (f" (built in {seconds:.0f}s)" if seconds else " (cached)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
