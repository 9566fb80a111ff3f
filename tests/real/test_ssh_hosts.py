"""SshRunner and LocalRunner against real sshd hosts (tests/harness/sshhosts.py), and the harness itself."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from sollol_cli.errors import SshError, UsageError
from sollol_cli.events import Event, StepDone, StepProgress, StepStarted
from sollol_cli.manifest.loader import parse_yaml, validate_document
from sollol_cli.ssh.runner import LocalRunner, RemoteFileNotFound, SshRunner
from tests.harness.sshhosts import (
    ChangedKeyNode,
    HostsConfig,
    HostsError,
    TestHosts,
    TestNode,
    known_hosts_line,
    start_test_hosts,
)

pytestmark = pytest.mark.real


async def connect(hosts: TestHosts, node: TestNode, **options: object) -> SshRunner:
    settings: dict[str, object] = {"client_keys": [hosts.client_key], "known_hosts_path": hosts.known_hosts}
    settings.update(options)
    return await SshRunner.connect(node.name, node.address, node.port, node.user, **settings)  # type: ignore[arg-type]


# ----- commands and files over SSH ----------------------------------------------------------------------


async def test_every_node_answers_with_its_own_hostname(ssh_nodes: TestHosts) -> None:
    runners = await asyncio.gather(*(connect(ssh_nodes, node, policy="strict") for node in ssh_nodes.nodes))
    try:
        results = await asyncio.gather(*(runner.run("hostname", check=True) for runner in runners))
    finally:
        await asyncio.gather(*(runner.close() for runner in runners))
    expected = [n.name if ssh_nodes.isolated else socket.gethostname() for n in ssh_nodes.nodes]
    assert [r.stdout.strip() for r in results] == expected
    # strict checking passed because every node's own key is recorded, not because checking is off
    recorded = ssh_nodes.known_hosts.read_text()
    for node in ssh_nodes.nodes:
        assert known_hosts_line(node.address, node.port, node.host_key_public) in recorded


async def test_run_reports_status_output_input_and_timeouts(ssh_nodes: TestHosts) -> None:
    async with await connect(ssh_nodes, ssh_nodes.nodes[0]) as runner:
        result = await runner.run("echo out; echo err >&2; exit 3")
        assert (result.exit_status, result.stdout, result.stderr, result.ok) == (3, "out\n", "err\n", False)
        assert (await runner.run("tr a-z A-Z", input="shout\n")).stdout == "SHOUT\n"
        with pytest.raises(SshError, match=r"^node1: `ls /nonexistent` failed with exit status 2: ls: cannot"):
            await runner.run("ls /nonexistent", check=True)
        with pytest.raises(SshError, match=r"^node1: `sleep 10` timed out after 0.5s$"):  # cut short: no exit 0
            await runner.run("sleep 10", timeout=0.5)
        chunks = [chunk async for chunk in runner.stream("for i in 1 2 3; do echo $i; sleep 0.05; done")]
        assert "".join(chunks) == "1\n2\n3\n"


async def test_put_file_and_read_file_round_trip(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    node = ssh_nodes.nodes[1]
    payload = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "blob.bin"
    local.write_bytes(payload)
    events: list[Event] = []
    # Unisolated loopback nodes share the controller's home directory: stay inside the node's own one.
    home = "/root" if ssh_nodes.isolated else str(node.root_dir)
    async with await connect(ssh_nodes, node) as runner:
        await runner.run(f"mkdir -p {home}/up && cd {home}", check=True)
        await runner.put_file(local, f"{home}/up/blob.bin", mode=0o750, reporter=events.append)
        remote = await runner.run(f"cd {home} && sha256sum up/blob.bin && stat -c %a up/blob.bin && ls up")
        assert remote.stdout.split() == [hashlib.sha256(payload).hexdigest(), "up/blob.bin", "750", "blob.bin"]
        if ssh_nodes.isolated:  # relative and ~/ paths are relative to the login directory, as in a shell
            assert await runner.read_file("up/blob.bin") == payload
            await runner.write_file("~/up/note.txt", b"hello\n", mode=0o600)
        else:
            await runner.write_file(f"{home}/up/note.txt", b"hello\n", mode=0o600)
        assert await runner.read_file(f"{home}/up/note.txt") == b"hello\n"
        assert (await runner.run(f"stat -c %a {home}/up/note.txt")).stdout == "600\n"
        with pytest.raises(RemoteFileNotFound, match=rf"^node2: {home}/up/missing does not exist$"):
            await runner.read_file(f"{home}/up/missing")
    assert isinstance(events[0], StepStarted) and isinstance(events[-1], StepDone)
    progress = [e for e in events if isinstance(e, StepProgress)]
    assert progress and progress[-1].completed == progress[-1].total == len(payload)
    assert (node.root_dir / "up" / "blob.bin").read_bytes() == payload  # each node has its own home


# ----- host keys ----------------------------------------------------------------------------------------


async def test_strict_refuses_an_unknown_host_key(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    node = ssh_nodes.nodes[0]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SshError) as caught:
        await connect(ssh_nodes, node, known_hosts_path=empty, policy="strict")
    message = str(caught.value)
    assert message.startswith(f"node1: unknown host key for {node.address}:{node.port} (SHA256:")
    assert f"it is not in {empty}" in message and "accept-new" in message


async def test_off_skips_host_key_checking(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    async with await connect(ssh_nodes, ssh_nodes.nodes[0], known_hosts_path=tmp_path / "none", policy="off") as r:
        assert (await r.run("true")).ok


async def test_bad_policy_settings_are_usage_errors(ssh_nodes: TestHosts) -> None:
    node = ssh_nodes.nodes[0]
    with pytest.raises(UsageError, match="unknown host_key_policy 'sometimes'; use strict, accept-new or off"):
        await connect(ssh_nodes, node, policy="sometimes")
    with pytest.raises(UsageError, match="accept-new needs sollol's own known_hosts file"):
        await connect(ssh_nodes, node, policy="accept-new")


async def test_accept_new_records_the_key_once(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    node = ssh_nodes.nodes[2]
    ours = tmp_path / "state" / "known_hosts"  # directory does not exist yet
    options = {"known_hosts_path": tmp_path / "absent", "policy": "accept-new", "sollol_known_hosts": ours}
    for _ in range(2):
        async with await connect(ssh_nodes, node, **options) as runner:
            assert (await runner.run("hostname")).ok
    assert ours.read_text() == known_hosts_line(node.address, node.port, node.host_key_public)
    assert oct(ours.stat().st_mode & 0o777) == "0o600"


async def test_accept_new_refuses_a_changed_key(ssh_nodes: TestHosts, changed_key_node: ChangedKeyNode) -> None:
    node = changed_key_node.node
    options = {"known_hosts_path": ssh_nodes.known_hosts, "policy": "accept-new"}
    with pytest.raises(SshError) as caught:
        await connect(ssh_nodes, node, sollol_known_hosts=changed_key_node.known_hosts, **options)
    assert str(caught.value).startswith(
        f"{node.name}: host key changed for {node.address}:{node.port} (possible man-in-the-middle); "
        f"remove the old key from {changed_key_node.known_hosts} if the node was reinstalled"
    )
    assert changed_key_node.known_hosts.read_text().count("\n") == 1  # nothing was recorded


async def test_strict_refuses_a_changed_key(ssh_nodes: TestHosts, changed_key_node: ChangedKeyNode) -> None:
    node = changed_key_node.node
    with pytest.raises(SshError, match=r"host key changed for .* \(possible man-in-the-middle\)"):
        await connect(ssh_nodes, node, known_hosts_path=changed_key_node.known_hosts, policy="strict")


# ----- login and network failures -----------------------------------------------------------------------


@pytest.fixture
def other_client_key(tmp_path: Path) -> Path:
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


async def test_wrong_client_key_is_permission_denied(
    ssh_nodes: TestHosts, other_client_key: Path, tmp_path: Path
) -> None:
    other = other_client_key
    node = ssh_nodes.nodes[0]
    with pytest.raises(
        SshError, match=rf"^node1: permission denied for user {node.user} at .*\(check identity_file\)$"
    ):
        await connect(ssh_nodes, node, client_keys=[other])
    with pytest.raises(SshError, match=rf"^node1: identity file {tmp_path}/nope does not exist$"):
        await connect(ssh_nodes, node, client_keys=[tmp_path / "nope"])


async def test_unreachable_address_fails_within_the_connect_timeout(
    ssh_nodes: TestHosts, unreachable_address: str
) -> None:
    with pytest.raises(SshError) as caught:
        await SshRunner.connect(
            "node9", unreachable_address, 22, "root", client_keys=[ssh_nodes.client_key],
            known_hosts_path=ssh_nodes.known_hosts, connect_timeout=1.0,
        )  # fmt: skip
    if ssh_nodes.mode == "netns":  # nothing answers ARP in the test subnet: the connect hangs until the timeout
        assert str(caught.value) == f"node9: connection to {unreachable_address}:22 timed out after 1s"
    else:  # loopback: nothing listens, the kernel refuses at once
        assert str(caught.value).startswith("node9: connection refused by")


# ----- LocalRunner --------------------------------------------------------------------------------------


async def test_local_runner_runs_commands_and_files(tmp_path: Path) -> None:
    events: list[Event] = []
    async with LocalRunner("ctl") as runner:
        result = await runner.run("echo $0; echo err >&2; exit 4")
        assert (result.exit_status, result.stdout, result.stderr) == (4, "bash\n", "err\n")
        assert (await runner.run("cat", input="piped")).stdout == "piped"
        with pytest.raises(SshError, match=r"^ctl: `false` failed with exit status 1$"):
            await runner.run("false", check=True)
        with pytest.raises(SshError, match=r"^ctl: `sleep 10` timed out after 0.3s$"):  # cut short: no exit 0
            await runner.run("sleep 10", timeout=0.3)
        # chunks arrive as the pipe delivers them: only their concatenation is defined
        assert "".join([c async for c in runner.stream("printf 'a\\nb\\n'")]) == "a\nb\n"

        source = tmp_path / "src.bin"
        source.write_bytes(os.urandom(2 * 1024 * 1024 + 1))
        await runner.put_file(source, str(tmp_path / "dst.bin"), mode=0o700, reporter=events.append)
        assert (tmp_path / "dst.bin").read_bytes() == source.read_bytes()
        assert oct((tmp_path / "dst.bin").stat().st_mode & 0o777) == "0o700"
        await runner.write_file(str(tmp_path / "w.txt"), b"data", mode=0o640)
        assert await runner.read_file(str(tmp_path / "w.txt")) == b"data"
        assert oct((tmp_path / "w.txt").stat().st_mode & 0o777) == "0o640"
        with pytest.raises(RemoteFileNotFound):
            await runner.read_file(str(tmp_path / "missing"))
    assert sorted(await asyncio.to_thread(os.listdir, tmp_path)) == [
        "dst.bin",
        "src.bin",
        "w.txt",
    ]  # no .sollol-part left
    assert isinstance(events[0], StepStarted) and isinstance(events[-1], StepDone)
    assert [e.completed for e in events if isinstance(e, StepProgress)][-1] == 2 * 1024 * 1024 + 1


# ----- the harness --------------------------------------------------------------------------------------


def sibling_config(tag: str, offset: int, count: int = 2) -> HostsConfig:
    """A small host set next to the session's: its own prefix and the /24 after the session's subnet."""
    base = HostsConfig.from_env()
    subnet = IPv4Network((int(base.subnet.network_address) + 256 * offset, 24))
    port = base.loopback_port + offset  # loopback mode: the same addresses, so another port
    return replace(
        base, count=count, prefix=base.prefix[:8] + tag, subnet=subnet, host_address=None, loopback_port=port
    )


def recorded_pids(config: HostsConfig) -> list[int]:
    return [pid for pid, _ in json.loads(config.state_file.read_text())["processes"]]


def leftovers(config: HostsConfig) -> list[str]:
    found = [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
             if line.startswith(config.prefix + "-")]  # fmt: skip
    found += [link for link in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.split()
              if link.startswith(config.prefix + "-")]  # fmt: skip
    found += subprocess.run(["ip", "route", "show", str(config.subnet)], capture_output=True, text=True).stdout.split()
    found += [str(p) for p in Path("/tmp").glob(f"sollol-test-hosts-{config.prefix}-*")]
    return found + ([str(config.state_file)] if config.state_file.exists() else [])


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_manifest_yaml_is_a_valid_cluster(ssh_nodes: TestHosts) -> None:
    text = ssh_nodes.manifest_yaml({"node1": "rpc: {port: 50052}", "node2": "ollama:\n  port: 11434"})
    cluster = validate_document(parse_yaml(text, "cluster.yaml"), "cluster.yaml")
    assert [(n.name, n.address, n.roles) for n in cluster.nodes][:2] == [
        ("node1", ssh_nodes.nodes[0].address, ["rpc"]),
        ("node2", ssh_nodes.nodes[1].address, ["ollama"]),
    ]
    assert cluster.ssh.identity_file == str(ssh_nodes.client_key)
    assert cluster.ssh.known_hosts == str(ssh_nodes.known_hosts)
    assert cluster.ssh.host_key_policy.value == "strict"
    with pytest.raises(ValueError, match="unknown nodes"):
        ssh_nodes.manifest_yaml({"node99": "rpc: {}"})


def test_exec_in_and_spawn_in_stay_on_their_node(ssh_nodes: TestHosts, tmp_path: Path) -> None:
    first, second = ssh_nodes.nodes[:2]
    proc = ssh_nodes.spawn_in(first, "exec sleep 301", log=tmp_path / "sleep.log")
    try:
        deadline = time.monotonic() + 5
        while "sleep 301" not in ssh_nodes.exec_in(first, "ps -eo args", check=False).stdout:
            assert time.monotonic() < deadline, "the spawned process never showed up"
            time.sleep(0.05)
        if ssh_nodes.isolated:
            assert "sleep 301" not in ssh_nodes.exec_in(second, "ps -eo args").stdout
            assert ssh_nodes.exec_in(second, "hostname; pwd").stdout.split() == [second.name, "/root"]
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_with_the_same_prefix_is_refused(ssh_nodes: TestHosts) -> None:
    with pytest.raises(HostsError, match=f"another test run \\(pid {os.getpid()}\\) uses test-host prefix"):
        start_test_hosts(ssh_nodes.config)


def test_teardown_leaves_nothing_behind() -> None:
    config = sibling_config("c", 1)
    hosts = start_test_hosts(config)
    pids = recorded_pids(config)
    assert leftovers(config) and all(alive(pid) for pid in pids)
    hosts.close()
    assert leftovers(config) == []
    assert not any(alive(pid) for pid in pids)


def test_a_killed_run_is_cleaned_by_the_next(tmp_path: Path) -> None:
    config = sibling_config("k", 2)
    script = (
        "import sys, time\n"
        "from tests.harness.sshhosts import HostsConfig, start_test_hosts\n"
        "from ipaddress import IPv4Network\n"
        f"hosts = start_test_hosts(HostsConfig(count=2, prefix={config.prefix!r}, subnet=IPv4Network({str(config.subnet)!r}),"
        f" mode={config.mode!r}, loopback_port={config.loopback_port}))\n"
        "print('up', flush=True)\n"
        "time.sleep(120)\n"
    )  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    try:
        assert victim.stdout is not None and victim.stdout.readline() == "up\n"
    finally:
        victim.send_signal(signal.SIGKILL)  # no teardown runs: everything it made stays behind
        victim.wait()
    stale = recorded_pids(config)
    assert stale and all(alive(pid) for pid in stale)

    with start_test_hosts(config) as hosts:  # cleans up first, then starts afresh under the same names
        assert not any(alive(pid) for pid in stale)
        assert len(list(Path("/tmp").glob(f"sollol-test-hosts-{config.prefix}-*"))) == 1
        assert hosts.exec_in(hosts.nodes[0], "echo ok").stdout == "ok\n"
    assert leftovers(config) == []
