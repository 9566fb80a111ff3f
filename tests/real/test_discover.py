"""`sollol discover` on the namespace test hosts (the only addresses it may scan, besides loopback):
real rpc-servers on two nodes, a real llama-server on one, the Ollama stand-in on one, and two unrelated
TCP listeners on backend ports (one sends a banner, one waits silently like a line-oriented server)."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.llama import ServerGroup, hello
from tests.harness.sshhosts import TestHosts
from tests.standin.ollama_standin import standin_script
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow]


def wait_for(check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("service did not come up")
        time.sleep(0.05)


def port_open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


@pytest.fixture(scope="module")
def lab(
    ssh_nodes: TestHosts, llama_bins, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestHosts]:  # type: ignore[no-untyped-def]
    logs = tmp_path_factory.mktemp("discover-logs")
    n1, n2, n3 = ssh_nodes.nodes[:3]
    for node in (n1, n2, n3):
        bin_dir = node.root_dir / "discover-bin"
        bin_dir.mkdir(exist_ok=True)
        shutil.copyfile(llama_bins.rpc_server, bin_dir / "rpc-server")
        shutil.copyfile(llama_bins.llama_server, bin_dir / "llama-server")
        (bin_dir / "rpc-server").chmod(0o755)
        (bin_dir / "llama-server").chmod(0o755)
    shutil.copyfile(tiny_gguf, n3.root_dir / "discover-bin" / "tiny.gguf")
    standin = n1.root_dir / "discover-bin" / "ollama"
    standin.write_text(standin_script(python=sys.executable))
    standin.chmod(0o755)
    procs = [
        ssh_nodes.spawn_in(n1, f"exec /root/discover-bin/rpc-server -H {n1.address} -p 50052", log=logs / "r1.log"),
        ssh_nodes.spawn_in(n2, f"exec /root/discover-bin/rpc-server -H {n2.address} -p 50052", log=logs / "r2.log"),
        ssh_nodes.spawn_in(
            n3, f"exec /root/discover-bin/llama-server -m /root/discover-bin/tiny.gguf --host {n3.address} --port 8080 "
            "-c 512 --alias tiny", log=logs / "l3.log",
        ),
        ssh_nodes.spawn_in(n1, f"OLLAMA_HOST={n1.address}:11434 exec /root/discover-bin/ollama serve", log=logs / "o1.log"),
        # something unrelated on a backend port: answers, but not like any backend
        ssh_nodes.spawn_in(
            n2, f"exec {sys.executable} -c \"import socketserver as s\n"
            "class H(s.StreamRequestHandler):\n def handle(self): self.wfile.write(b'220 welcome\\\\r\\\\n')\n"
            f"s.TCPServer(('{n2.address}', 8080), H).serve_forever()\"", log=logs / "u2.log",
        ),
        # ... and one that reads and never answers, as a busy rpc-server does (but it keeps accepting)
        ssh_nodes.spawn_in(
            n3, f"exec {sys.executable} -c \"import socketserver as s\n"
            "class H(s.StreamRequestHandler):\n def handle(self):\n  while self.rfile.read1(1024): pass\n"
            f"s.ThreadingTCPServer(('{n3.address}', 11434), H).serve_forever()\"", log=logs / "u3.log",
        ),
    ]  # fmt: skip
    wait_for(lambda: hello(n1.address, 50052) is not None and hello(n2.address, 50052) is not None)
    wait_for(
        lambda: all(
            port_open(address, port)
            for address, port in ((n3.address, 8080), (n1.address, 11434), (n2.address, 8080), (n3.address, 11434))
        )
    )
    yield ssh_nodes
    # the processes run inside the nodes: kill them there (killing the local nsenter would leave them)
    for node in (n1, n2, n3):
        # [d]... keeps pkill from matching (and killing) the shell that runs it
        ssh_nodes.exec_in(node, "pkill -f '[d]iscover-bin'; pkill -f '[s]ocketserver'; true", check=False)
    for node in (n1, n2, n3):
        wait_for(lambda node=node: not any(port_open(node.address, p) for p in (8080, 11434, 50052)), 10)
    for proc in procs:
        proc.kill()


def scan(hosts: TestHosts) -> dict:  # type: ignore[type-arg]
    subnet = str(hosts.config.subnet)
    result = invoke("discover", subnet, "--ports", "11434,8080,50052", "--json", "-q")
    print(result.stdout, result.stderr)  # shown when a test fails: what the scan saw
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_scan_finds_exactly_the_backends(lab: TestHosts, llama_servers: ServerGroup, tiny_gguf: Path) -> None:
    n1, n2, n3 = lab.nodes[:3]
    # a coordinator attached to node2's rpc-server makes it busy
    llama_servers.llama_server(tiny_gguf, rpc=[f"{n2.address}:50052"])
    data = scan(lab)
    found = {(f["address"], f["port"]): f for f in data["found"]}
    assert {key: (f["kind"], f["state"]) for key, f in found.items()} == {
        (n1.address, 11434): ("ollama", "ready"),
        (n1.address, 50052): ("rpc", "ready"),
        (n2.address, 8080): ("unknown", "unknown"),
        (n2.address, 50052): ("rpc", "busy"),
        (n3.address, 8080): ("llamacpp", "ready"),
        (n3.address, 11434): ("unknown", "unknown"),
    }
    assert found[(n1.address, 50052)]["version"] == "7.0.0"
    assert found[(n1.address, 50052)]["total_bytes"] > 0
    assert found[(n1.address, 50052)]["devices"] >= 1
    assert found[(n3.address, 8080)]["models"] == ["tiny"]
    assert found[(n3.address, 8080)]["version"] == "b0-0c1e57098"
    assert found[(n3.address, 8080)]["slots"] >= 1
    assert found[(n1.address, 11434)]["version"]
    assert found[(n1.address, 11434)]["models"]
    assert found[(n3.address, 11434)]["detail"] == "open, but answers neither an rpc-server HELLO nor HTTP"
    assert data["addresses"] == 254
    assert data["silent"] == []
    # those probes left the busy rpc-server's one-client queue full: now its port drops connects, and
    # the scan says so instead of pretending the port is closed
    again = scan(lab)
    assert {(f["address"], f["port"]) for f in again["found"]} == set(found) - {(n2.address, 50052)}
    assert again["silent"] == [f"{n2.address}:50052"]


def test_write_adds_the_new_backends_to_a_commented_manifest(lab: TestHosts, tmp_path: Path) -> None:
    n1 = lab.nodes[0]
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "# my lab\nname: lab\nnodes:\n  - name: node1   # already managed\n"
        f"    address: {n1.address}\n    rpc: {{port: 50052}}\n"
    )
    subnet = str(lab.config.subnet)
    result = invoke("discover", subnet, "--ports", "11434,8080,50052", "--write", "-f", str(path), "-v")
    print(result.stdout, result.stderr)  # shown when the test fails: what the scan saw (it once added nothing)
    assert result.exit_code == 0, result.stderr
    text = path.read_text()
    assert text.startswith("# my lab\nname: lab\nnodes:\n  - name: node1   # already managed\n")
    assert f"address: {n1.address}, port: 50052" not in text  # already a node role
    assert text.count("found by sollol discover") == 3  # ollama on node1, rpc on node2, llama-server on node3
    assert "kind: unknown" not in text
    assert invoke("validate", str(path)).exit_code == 0
    again = invoke("discover", subnet, "--ports", "11434,8080,50052", "--write", "-f", str(path), "-q")
    assert again.exit_code == 0 and path.read_text() == text
    assert again.stderr.strip().splitlines()[-1] == f"nothing new for {path}"
