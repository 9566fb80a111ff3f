"""`sollol up`, `status`, `run`, `logs` and `down` on this machine (`address: local` nodes, no SSH, no root),
with stand-in binaries that really listen and answer: rpc-server and llama-server from
tests/standin/llama_standins.py (via `llama_cpp.bin_dir`, so `up` uploads them as it does sollol's build)
and the Ollama stand-in as `ollama.binary`. What each command shows is checked exactly; only the machine's
memory and the measured speed are left out. Everything started is stopped again at teardown."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from sollol_cli.state import Accelerator, load_state, save_state
from tests.harness.ollama import write_standin_script
from tests.standin.llama_standins import write_bin_dir
from tests.standin.ollama_standin import ModelSpec, StandinConfig, answer_tokens
from tests.unit.cli_helpers import invoke

FREE_CELL = re.compile(r"(\d+\.\d/\d+\.\d GiB|free) +")  # a cell of status's `free` column and its padding
RPC_MEMORY = "3.0/4.0 GiB"  # what the rpc-server stand-in reports


def free_port() -> int:
    """A free port of the kernel's ephemeral range (five digits there, so the tables below line up)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    assert port >= 10000
    return port


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Local:
    manifest: str
    home: Path
    rpc: int
    llama: int
    ollama: int

    def pidfiles(self) -> list[Path]:
        return sorted(self.home.glob(".sollol/*/*/run/*.pid"))


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Local]:
    """Three local nodes: an rpc-server, a llama-server serving `tiny`, an Ollama with `tiny` and `other`."""
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(Settings().cache_dir))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the local nodes' ~/.sollol
    bins = write_bin_dir(tmp_path / "bin")
    ollama = write_standin_script(tmp_path)
    config = tmp_path / "ollama.json"
    StandinConfig(name="ol", models=[ModelSpec("tiny"), ModelSpec("other")]).dump(config)
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")  # the llama-server stand-in never reads it
    local = Local(str(tmp_path / "cluster.yaml"), home, free_port(), free_port(), free_port())
    Path(local.manifest).write_text(
        "name: lab\n"
        f"llama_cpp: {{bin_dir: {bins}}}\n"
        "nodes:\n"
        f"  - {{name: shard, address: local, rpc: {{port: {local.rpc}, threads: 1}}}}\n"
        f"  - {{name: whole, address: local, llamacpp: {{port: {local.llama}, model: {model}, alias: tiny}}}}\n"
        f"  - name: ol\n    address: local\n"
        f"    ollama: {{port: {local.ollama}, binary: {ollama}, environment: {{SOLLOL_STANDIN_CONFIG: {config}}}}}\n"
    )
    try:
        yield local
    finally:
        invoke("down", local.manifest, "-q")
        for pidfile in local.pidfiles():  # whatever `down` could not stop
            try:
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def up_table(local: Local, status: str) -> str:
    if status == "changed":
        return (
            "node   status   services                               detail   \n"
            f"shard  changed  rpc 127.0.0.1:{local.rpc} (7.0.0)            2 changes\n"
            f"whole  changed  llamacpp 127.0.0.1:{local.llama} (b0-standin)  2 changes\n"
            f"ol     changed  ollama 127.0.0.1:{local.ollama} (0.12.6)        1 change \n"
            "3 nodes changed\n"
            "note: the services started on shard, whole, ol run without systemd and will not survive a reboot; "
            "run `sollol up` again after one\n"
        )
    return (
        "node   status     services                               detail\n"
        f"shard  unchanged  rpc 127.0.0.1:{local.rpc} (7.0.0)                  \n"
        f"whole  unchanged  llamacpp 127.0.0.1:{local.llama} (b0-standin)        \n"
        f"ol     unchanged  ollama 127.0.0.1:{local.ollama} (0.12.6)              \n"
        "3 nodes unchanged\n"
    )


DOWN_CHANGED = (
    "node   status   services  detail  \n"
    "shard  changed  -         1 change\n"
    "whole  changed  -         1 change\n"
    "ol     changed  -         1 change\n"
    "3 nodes changed\n"
)
DOWN_UNCHANGED = (
    "node   status     services  detail\n"
    "shard  unchanged  -               \n"
    "whole  unchanged  -               \n"
    "ol     unchanged  -               \n"
    "3 nodes unchanged\n"
)


def without_machine_memory(table: str) -> list[str]:
    """The lines, with this machine's memory (llamacpp and ollama nodes, and any node that is down) as
    `<memory>` and one space after the `free` column, whose width follows from it."""

    def cell(match: re.Match[str]) -> str:
        text = match.group(1)
        return (text if text in ("free", RPC_MEMORY) else "<memory>") + " "

    return [FREE_CELL.sub(cell, line).rstrip() for line in table.splitlines()]


def test_up_is_idempotent_and_down_stops_everything(local: Local) -> None:
    up = invoke("up", local.manifest, "-q")
    assert (up.exit_code, up.stdout, up.stderr) == (0, "", up_table(local, "changed"))
    assert all(listening(port) for port in (local.rpc, local.llama, local.ollama))
    assert sorted(p.name for p in local.pidfiles()) == [
        f"sollol-lab-llamacpp-{local.llama}.pid", f"sollol-lab-ollama-{local.ollama}.pid",
        f"sollol-lab-rpc-{local.rpc}.pid",
    ]  # fmt: skip
    again = invoke("up", local.manifest, "-q")
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", up_table(local, "unchanged"))
    down = invoke("down", local.manifest, "-q")
    assert (down.exit_code, down.stdout, down.stderr) == (0, "", DOWN_CHANGED)
    assert not any(listening(port) for port in (local.rpc, local.llama, local.ollama))
    assert local.pidfiles() == []
    again = invoke("down", local.manifest, "-q")
    assert (again.exit_code, again.stdout, again.stderr) == (0, "", DOWN_UNCHANGED)


def test_status_before_and_after_down(local: Local) -> None:
    assert invoke("up", local.manifest, "-q").exit_code == 0
    status = invoke("status", "-f", local.manifest)
    assert (status.exit_code, status.stderr) == (0, "")
    assert without_machine_memory(status.stdout) == [
        "cluster 'lab': 3/3 backends reachable",
        "backend  kind      address          state  version     models (*loaded)           free busy",
        f"shard    rpc       127.0.0.1:{local.rpc}  up     rpc 7.0.0   -                          3.0/4.0 GiB -",
        f"whole    llamacpp  127.0.0.1:{local.llama}  up     b0-standin  tiny*                      <memory> 0/1",
        f"ol       ollama    127.0.0.1:{local.ollama}  up     0.12.6      other:latest, tiny:latest  <memory> -",
    ]
    rows = json.loads(invoke("status", "--json", "-f", local.manifest).stdout)["backends"]
    assert [(r["name"], r["reachable"], r["models"], r["loaded"]) for r in rows] == [
        ("shard", "yes", [], []),
        ("whole", "yes", ["tiny"], ["tiny"]),
        ("ol", "yes", ["other:latest", "tiny:latest"], []),
    ]
    assert (rows[0]["free_bytes"], rows[0]["total_bytes"]) == (3 * 2**30, 4 * 2**30)  # what the rpc-server said
    assert invoke("down", local.manifest, "-q").exit_code == 0
    status = invoke("status", "-f", local.manifest)
    assert (status.exit_code, status.stderr) == (4, "")  # nothing reachable
    assert without_machine_memory(status.stdout) == [
        "cluster 'lab': 0/3 backends reachable",
        "backend  kind      address          state  version  models (*loaded)  free busy",
        f"shard    rpc       127.0.0.1:{local.rpc}  down   -        -                 <memory> -",
        f"whole    llamacpp  127.0.0.1:{local.llama}  down   -        -                 <memory> -",
        f"ol       ollama    127.0.0.1:{local.ollama}  down   -        -                 <memory> -",
        f"shard: connect to 127.0.0.1:{local.rpc} failed: Connection refused",
        f"whole (127.0.0.1:{local.llama}): connection refused",  # each backend named once
        f"ol (127.0.0.1:{local.ollama}): connection refused",
    ]


def test_run_answers_from_the_node_that_serves_the_model(local: Local) -> None:
    assert invoke("up", local.manifest, "-q").exit_code == 0
    llama = invoke("run", "tiny", "Hello", "-f", local.manifest)
    assert llama.exit_code == 0, llama.stderr
    # the llama-server applies its chat template, then answers 8 tokens of its alias and that prompt
    assert llama.stdout == "".join(answer_tokens("tiny", "tiny", "<|user|>Hello\n<|assistant|>", 0, 8)) + "\n"
    assert re.fullmatch(r"whole · distribute · first token \d+ ms · [\d.]+ tokens/s · 8 tokens\n", llama.stderr)
    ollama = invoke("run", "other", "Hello", "--num-predict", "5", "-f", local.manifest)
    assert ollama.exit_code == 0, ollama.stderr
    assert ollama.stdout == "".join(answer_tokens("ol", "other:latest", "Hello", 0, 5)) + "\n"
    assert re.fullmatch(r"ol · distribute · first token \d+ ms · [\d.]+ tokens/s · 5 tokens\n", ollama.stderr)
    missing = invoke("run", "nope", "Hi", "-f", local.manifest)
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr == "error: model 'nope' not found on any node; see `sollol status`\n"


def test_logs_show_what_each_service_printed(local: Local) -> None:
    assert invoke("up", local.manifest, "-q").exit_code == 0
    expected = {
        "shard": f"rpc-server stand-in listening on 127.0.0.1:{local.rpc} (protocol 7.0.0)\n",
        "whole": f"llama-server stand-in listening on 127.0.0.1:{local.llama} with {local.home.parent}/tiny.gguf\n",
        "ol": f"Listening on 127.0.0.1:{local.ollama} (version 0.12.6) [sollol Ollama stand-in]\n",
    }
    for node, text in expected.items():
        result = invoke("logs", node, "-f", local.manifest)
        assert (result.exit_code, result.stdout, result.stderr) == (0, text, ""), node
    assert invoke("logs", "shard", "rpc", "-f", local.manifest).stdout == expected["shard"]
    assert invoke("logs", "shard", "-n", "0", "-f", local.manifest).stdout == ""
    data = json.loads(invoke("logs", "shard", "--json", "-f", local.manifest).stdout)
    path = "$HOME/.sollol/lab/shard/log/sollol-lab-rpc-" + str(local.rpc) + ".log"
    assert data == {"node": "shard", "role": "rpc", "path": path, "lines": [expected["shard"].rstrip("\n")]}
    both = invoke("logs", "shard", "--json", "--follow", "-f", local.manifest)
    assert (both.exit_code, both.stderr) == (
        2,
        "error: --json prints the log's last lines once; drop --follow or --json\n",
    )
    unknown = invoke("logs", "nosuch", "-f", local.manifest)
    assert (unknown.exit_code, unknown.stdout) == (2, "")
    assert unknown.stderr == "error: no node named 'nosuch' in the manifest; nodes: shard, whole, ol\n"
    wrong_role = invoke("logs", "whole", "rpc", "-f", local.manifest)
    assert (wrong_role.exit_code, wrong_role.stderr) == (2, "error: node 'whole' has no 'rpc' role; it has: llamacpp\n")


def test_status_shows_each_nodes_accelerators(local: Local) -> None:
    """The devices `up` recorded per node (here written into the state file, as a GPU node's facts would be):
    a `node devices` column once a node has a GPU, and every device in --json."""
    assert invoke("up", local.manifest, "-q").exit_code == 0
    settings = Settings()
    state = load_state(settings.state_dir, "lab")
    # no free memory: a `x/y GiB` cell would be taken for the machine's memory by without_machine_memory
    rtx = Accelerator(kind="cuda", name="NVIDIA GeForce RTX 3090", memory_total=24 * 2**30, driver="550.54.14")
    lavapipe = Accelerator(kind="vulkan", name="llvmpipe (LLVM 15.0.6, 256 bits)", driver="llvmpipe", device_type="cpu")
    state.nodes["shard"].accelerators = [rtx, lavapipe]
    state.nodes["shard"].vulkan_loader = "/lib/x86_64-linux-gnu/libvulkan.so.1"
    state.nodes["whole"].accelerators, state.nodes["whole"].vulkan_loader = [lavapipe], None
    state.nodes["ol"].accelerators, state.nodes["ol"].vulkan_loader = [], None
    save_state(settings.state_dir, state)
    status = invoke("status", "-f", local.manifest)
    assert (status.exit_code, status.stderr) == (0, "")
    # a second device goes on a line of its own, indented as far as the machine-wide `free` column makes it
    assert [line.lstrip() for line in without_machine_memory(status.stdout)] == [
        "cluster 'lab': 3/3 backends reachable",
        "backend  kind      address          state  version     models (*loaded)           free busy  node devices",
        f"shard    rpc       127.0.0.1:{local.rpc}  up     rpc 7.0.0   -                          3.0/4.0 GiB -     "
        "cuda NVIDIA GeForce RTX 3090 24.0 GiB",
        "vulkan llvmpipe (LLVM 15.0.6, 256 bits) [cpu]",
        f"whole    llamacpp  127.0.0.1:{local.llama}  up     b0-standin  tiny*                      <memory> 0/1   "
        "vulkan llvmpipe (LLVM 15.0.6, 256 bits) [cpu]",
        f"ol       ollama    127.0.0.1:{local.ollama}  up     0.12.6      other:latest, tiny:latest  <memory> -     -",
    ]
    rows = json.loads(invoke("status", "--json", "-f", local.manifest).stdout)["backends"]
    assert [(r["name"], r["accelerators"], r["vulkan_loader"]) for r in rows] == [
        ("shard", [rtx.model_dump(), lavapipe.model_dump()], "/lib/x86_64-linux-gnu/libvulkan.so.1"),
        ("whole", [lavapipe.model_dump()], None),
        ("ol", [], None),
    ]
    assert rows[0]["accelerators"][0] == {
        "kind": "cuda", "name": "NVIDIA GeForce RTX 3090", "memory_total": 24 * 2**30, "memory_free": None,
        "driver": "550.54.14", "device_type": "gpu",
    }  # fmt: skip
    # what the rpc-server said; unnamed in the manifest, on a node with the CPU build: its CPU device
    assert rows[0]["rpc_devices"] == [
        {"index": 0, "label": f"127.0.0.1:{local.rpc}", "name": None, "kind": "cpu",
         "free_bytes": 3 * 2**30, "total_bytes": 4 * 2**30},
    ]  # fmt: skip
    # the build `up` chose and put there (the stand-ins' llama_cpp.bin_dir; a node without a GPU: cpu), none
    # for Ollama
    assert [(r["name"], r["llama_backend"], r["llama_build"]) for r in rows] == [
        ("shard", "cpu", "bin_dir"),
        ("whole", "cpu", "bin_dir"),
        ("ol", None, None),
    ]
