"""`sollol up` / `down` / `logs` against real sshd nodes, real rpc-server / llama-server binaries and the
Ollama stand-in installed as `ollama` on a node."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sollol_cli.backends.rpc import probe_rpc
from tests.harness.llama import bin_dir_of
from tests.harness.sshhosts import TestHosts
from tests.standin.ollama_standin import standin_script
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow]


@dataclass
class Lab:
    hosts: TestHosts
    manifest: Path
    bin_dir: Path
    roles: dict[str, str]
    tmp: Path

    def write(self, roles: dict[str, str] | None = None, **kw: object) -> Path:
        extra = f"llama_cpp:\n  bin_dir: {self.bin_dir}\n"
        self.manifest.write_text(self.hosts.manifest_yaml(roles or self.roles, extra=extra, **kw))  # type: ignore[arg-type]
        return self.manifest

    def node(self, name: str):  # type: ignore[no-untyped-def]
        return next(n for n in self.hosts.nodes if n.name == name)

    def listening(self, name: str) -> str:
        return self.hosts.exec_in(self.node(name), "ss -ltnH").stdout


def up(manifest: Path, *args: str):  # type: ignore[no-untyped-def]
    result = invoke("up", str(manifest), "--json", *args)
    data = json.loads(result.stdout) if result.stdout.strip() else None
    return result, data


def pids(data: dict) -> dict[str, int]:
    return {f"{n['node']}/{s['name']}": s["pid"] for n in data["nodes"] for s in n["services"]}


@pytest.fixture(scope="module")
def lab(ssh_nodes: TestHosts, llama_bins, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("lab")
    bin_dir = bin_dir_of(llama_bins, tmp)
    node2, node3 = ssh_nodes.nodes[1], ssh_nodes.nodes[2]
    models = node2.root_dir / "models"
    models.mkdir(exist_ok=True)
    if not (models / "tiny.gguf").exists():
        shutil.copyfile(tiny_gguf, models / "tiny.gguf")
    standin = node3.root_dir / "bin" / "ollama"
    standin.parent.mkdir(exist_ok=True)
    standin.write_text(standin_script(python=sys.executable))
    standin.chmod(0o755)
    roles = {
        "node1": "rpc: {port: 50052}",
        "node2": "rpc: {port: 50052}\nllamacpp: {port: 8080, model: /root/models/tiny.gguf, slots: 2}",
        "node3": "ollama:\n  binary: /root/bin/ollama\n  environment: {OLLAMA_NUM_PARALLEL: '2'}",
    }
    lab = Lab(ssh_nodes, tmp / "cluster.yaml", bin_dir, roles, tmp)
    lab.write()
    yield lab
    invoke("down", str(lab.manifest))


def test_up_brings_every_node_up(lab: Lab) -> None:
    result, data = up(lab.write())
    assert result.exit_code == 0, [n["failures"] for n in data["nodes"]]
    assert [n["status"] for n in data["nodes"]] == ["changed", "changed", "changed"]
    services = sorted((n["node"], s["name"], s["ready"]) for n in data["nodes"] for s in n["services"])
    assert services == [
        ("node1", "sollol-lab-rpc-50052", True),
        ("node2", "sollol-lab-llamacpp-8080", True),
        ("node2", "sollol-lab-rpc-50052", True),
        ("node3", "sollol-lab-ollama-11434", True),
    ]
    # a HELLO from the test to each rpc-server succeeds
    for node in lab.hosts.nodes[:2]:
        probe = asyncio.run(probe_rpc(node.address, 50052, connect_timeout=2, reply_timeout=2))
        assert probe.state == "ready", probe
        assert probe.protocol == (7, 0, 0)
    # the llama-server answers a completion
    request = urllib.request.Request(
        f"http://{lab.node('node2').address}:8080/completion",
        data=json.dumps({"prompt": "hello", "n_predict": 4, "temperature": 0}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.load(response)["tokens_predicted"] == 4
    # the Ollama stand-in runs as `ollama serve` on node3
    with urllib.request.urlopen(f"http://{lab.node('node3').address}:11434/api/version", timeout=5) as response:
        assert "version" in json.load(response)
    # each listens only on its node's address, never on a wildcard
    for name, ports in (("node1", ["50052"]), ("node2", ["50052", "8080"]), ("node3", ["11434"])):
        listening = lab.listening(name)
        address = lab.node(name).address
        for port in ports:
            assert f"{address}:{port}" in listening
            assert f"0.0.0.0:{port}" not in listening and f"*:{port}" not in listening


def test_up_again_changes_nothing(lab: Lab) -> None:
    first, before = up(lab.write())
    assert first.exit_code == 0, first.stderr
    again = invoke("up", str(lab.manifest))
    assert again.exit_code == 0, again.stderr
    assert again.stderr.rstrip().splitlines()[-1] == "3 nodes unchanged"
    _, after = up(lab.manifest)
    assert pids(after) == pids(before)
    assert all(n["changes"] == [] for n in after["nodes"])


def test_changed_port_restarts_only_that_service(lab: Lab) -> None:
    _, before = up(lab.write())
    roles = {**lab.roles, "node1": "rpc: {port: 50062}"}
    result, after = up(lab.write(roles))
    assert result.exit_code == 0, result.stderr
    changed = {n["node"]: n["changes"] for n in after["nodes"]}
    assert changed["node2"] == [] and changed["node3"] == []
    address = lab.node("node1").address
    old_pid = pids(before)["node1/sollol-lab-rpc-50052"]
    assert changed["node1"] == [
        f"stop sollol-lab-rpc-50052 (pid {old_pid}): no longer in the manifest",
        f"start sollol-lab-rpc-50062 on {address}:50062 [process]: not running",
    ]
    assert f"{address}:50062" in lab.listening("node1") and f"{address}:50052" not in lab.listening("node1")
    others_before = {k: v for k, v in pids(before).items() if not k.startswith("node1/")}
    others_after = {k: v for k, v in pids(after).items() if not k.startswith("node1/")}
    assert others_after == others_before
    up(lab.write())  # back to the original manifest


def test_down_stops_exactly_what_up_started(lab: Lab, tmp_path: Path) -> None:
    result, _ = up(lab.write())
    assert result.exit_code == 0, result.stderr
    node1 = lab.node("node1")
    # an unrelated rpc-server with the same binary name, started by someone else
    stranger = lab.hosts.spawn_in(
        node1, "exec /root/.sollol/bin/rpc-server -H 127.0.0.1 -p 50099", log=tmp_path / "s.log"
    )
    deadline = time.monotonic() + 10  # it listens before `down` runs, so `down` could mistake it for ours
    while "127.0.0.1:50099" not in lab.listening("node1"):
        assert time.monotonic() < deadline and stranger.poll() is None, (tmp_path / "s.log").read_text()
        time.sleep(0.05)
    down = invoke("down", str(lab.manifest), "--json")
    assert down.exit_code == 0, down.stderr
    data = json.loads(down.stdout)
    assert [n["status"] for n in data["nodes"]] == ["changed", "changed", "changed"]
    for name in ("node1", "node2", "node3"):
        listening = lab.listening(name)
        for port in ("50052", "8080", "11434"):
            assert f"{lab.node(name).address}:{port}" not in listening
    assert stranger.poll() is None, "down must not touch processes it did not start"
    assert "127.0.0.1:50099" in lab.listening("node1")
    again = invoke("down", str(lab.manifest))
    assert again.exit_code == 0
    assert again.stderr.rstrip().splitlines()[-1] == "3 nodes unchanged"
    lab.hosts.exec_in(node1, "kill $(pgrep -a -x rpc-server | grep -- '-p 50099' | cut -d' ' -f1)")


def test_dry_run_changes_nothing(lab: Lab) -> None:
    invoke("down", str(lab.manifest))
    result = invoke("up", str(lab.write()), "--dry-run")
    assert result.exit_code == 0, result.stderr
    n1, n2, n3 = (lab.node(f"node{i}").address for i in (1, 2, 3))
    # the binaries stay on the nodes after `down`, so only starts are planned
    # the llama.cpp build each node gets (the lab's bin_dir; the test hosts have only lavapipe: no GPU)
    assert result.stdout == (
        "node1: 1 change\n"
        "  llama.cpp cpu (bin_dir): auto: no GPU\n"
        f"  start sollol-lab-rpc-50052 on {n1}:50052 [process]: not running\n"
        "node2: 2 changes\n"
        "  llama.cpp cpu (bin_dir): auto: no GPU\n"
        f"  start sollol-lab-rpc-50052 on {n2}:50052 [process]: not running\n"
        f"  start sollol-lab-llamacpp-8080 on {n2}:8080 [process]: not running\n"
        "node3: 1 change\n"
        f"  start sollol-lab-ollama-11434 on {n3}:11434 [process]: not running\n"
    )
    for name in ("node1", "node2", "node3"):
        assert ":50052" not in lab.listening(name) and ":11434" not in lab.listening(name)


def test_dry_run_json(lab: Lab) -> None:
    invoke("down", str(lab.manifest))
    result = invoke("up", str(lab.write()), "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    n1 = lab.node("node1").address
    assert data["nodes"][0] == {
        "node": "node1",
        "status": "planned",
        "plan": [
            "llama.cpp cpu (bin_dir): auto: no GPU",
            f"start sollol-lab-rpc-50052 on {n1}:50052 [process]: not running",
        ],
        "changes": [],
        "failures": [],
        "services": [],
    }
    assert data["summary"] == {"changed": 0, "unchanged": 0, "failed": 0, "unreachable": 0, "planned": 3}
    assert (data["action"], data["dry_run"], data["exit_code"]) == ("up", True, 0)


def test_failing_nodes_fail_alone(lab: Lab, changed_key_node, unreachable_address: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = lab.node("node1")
    wrong_key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(lab.hosts.known_hosts.read_text() + changed_key_node.known_hosts.read_text())
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(
        "name: mixed\n"
        f"ssh: {{user: root, identity_file: {lab.hosts.client_key}, known_hosts: {known}, connect_timeout: 2}}\n"
        f"llama_cpp: {{bin_dir: {lab.bin_dir}}}\n"
        "nodes:\n"
        f"  - {{name: good, address: {good.address}, rpc: {{port: 50072}}}}\n"
        f"  - {{name: badkey, address: {lab.node('node2').address}, rpc: {{port: 50072}}, ssh: {{identity_file: {wrong_key}}}}}\n"
        f"  - {{name: changed, address: {changed_key_node.node.address}, rpc: {{port: 50072}}}}\n"
        f"  - {{name: gone, address: {unreachable_address}, rpc: {{port: 50072}}}}\n"
    )
    result = invoke("up", str(manifest), "--json")
    data = json.loads(result.stdout)
    statuses = {n["node"]: (n["status"], n["failures"]) for n in data["nodes"]}
    assert result.exit_code == 1
    assert statuses["good"][0] == "changed"
    assert statuses["badkey"][0] == "unreachable" and "permission denied" in statuses["badkey"][1][0].lower()
    assert statuses["changed"][0] == "unreachable" and "host key changed" in statuses["changed"][1][0].lower()
    assert statuses["gone"][0] == "unreachable" and "timed out" in statuses["gone"][1][0].lower()
    assert "after 2s" in statuses["gone"][1][0]  # the manifest's connect_timeout bounded the wait
    assert invoke("down", str(manifest)).exit_code == 1  # the three bad nodes are still unreachable


def test_killed_controller_then_up_converges(lab: Lab) -> None:
    invoke("down", str(lab.manifest))
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sollol_cli", "up", str(lab.write()), "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    pidfile = lab.node("node1").root_dir / ".sollol/lab/node1/run/sollol-lab-rpc-50052.pid"
    deadline = time.monotonic() + 60
    while not pidfile.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    result, data = up(lab.manifest)
    assert result.exit_code == 0, [n["failures"] for n in data["nodes"]]
    assert all(s["ready"] for n in data["nodes"] for s in n["services"])
    for name in ("node1", "node2"):
        # zombies (state Z) are dead processes the node's init has not reaped yet: they do not run
        ps = lab.hosts.exec_in(lab.node(name), "ps -eo pid,stat,comm,args", check=False).stdout
        rows = [line.split() for line in ps.splitlines()[1:]]
        running = [row for row in rows if row[2] == "rpc-server" and "Z" not in row[1]]
        assert len(running) == 1, f"{name} runs {len(running)} rpc-servers:\n{ps}"


def test_logs(lab: Lab) -> None:
    up(lab.write())
    result = invoke("logs", "node2", "llamacpp", "--lines", "500", "--manifest", str(lab.manifest))
    assert result.exit_code == 0, result.stderr
    assert f"llama_server: listening on http://{lab.node('node2').address}:8080" in result.stdout
    ambiguous = invoke("logs", "node2", "--manifest", str(lab.manifest))
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr == "error: node 'node2' runs rpc, llamacpp; name one: sollol logs NODE ROLE\n"
    unknown = invoke("logs", "nod1", "--manifest", str(lab.manifest))
    assert unknown.stderr == "error: no node named 'nod1' in the manifest; did you mean 'node1'?\n"
