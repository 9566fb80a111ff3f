"""Service specs, start/stop shell text and systemd units, as exact text."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sollol_cli.manifest.models import Cluster
from sollol_cli.provision.facts import facts_script, parse_facts
from sollol_cli.provision.services import (
    BinarySource,
    LocalBuild,
    binary_sources,
    build_sources,
    detached_start,
    node_services,
    rpc_servers_on_machine,
    unit_text,
)
from sollol_cli.ssh.nodeproc import stop_text

SHA = "f" * 64


def specs(node: dict):  # type: ignore[no-untyped-def]
    c = Cluster.model_validate({"name": "lab", "nodes": [{"name": "n1", "address": "10.0.0.1", **node}]})
    sources = binary_sources(
        c.llama_cpp, {"rpc-server": ("/c/rpc-server", SHA), "llama-server": ("/c/llama-server", SHA)}
    )
    return node_services("lab", c.nodes[0], sources)


def test_rpc_argv_binds_node_address() -> None:
    (rpc,) = specs({"rpc": {"port": 50053, "threads": 4, "device": "CUDA0"}})
    assert rpc.argv == (
        "$HOME/.sollol/bin/rpc-server", "-H", "10.0.0.1", "-p", "50053", "-t", "4", "-c", "-d", "CUDA0",
    )  # fmt: skip


def test_one_rpc_server_serves_every_device_listed() -> None:
    """The pinned rpc-server takes `-d A,B` and serves both on one port; llama-server sees two devices."""
    (rpc,) = specs({"rpc": {"device": ["Vulkan0", "CPU"]}})
    assert rpc.argv[rpc.argv.index("-d") :] == ("-d", "Vulkan0,CPU")


def test_rpc_threads_default_to_the_nodes_cores() -> None:
    c = Cluster.model_validate({"name": "lab", "nodes": [{"name": "n1", "address": "10.0.0.1", "rpc": {}}]})
    (rpc,) = node_services("lab", c.nodes[0], {}, cpus=16)
    assert rpc.argv == ("rpc-server", "-H", "10.0.0.1", "-p", "50052", "-t", "16", "-c")
    assert rpc.ready == "rpc-hello"


@pytest.mark.parametrize(("cpus", "sharing", "threads"), [(16, 2, "8"), (16, 3, "5"), (2, 4, "1")])
def test_rpc_servers_on_one_machine_share_its_cores(cpus: int, sharing: int, threads: str) -> None:
    c = Cluster.model_validate({"name": "lab", "nodes": [{"name": "n1", "address": "local", "rpc": {}}]})
    (rpc,) = node_services("lab", c.nodes[0], {}, cpus=cpus, rpc_sharing=sharing)
    assert rpc.argv[rpc.argv.index("-t") + 1] == threads


def test_rpc_servers_counted_per_machine() -> None:
    c = Cluster.model_validate(
        {
            "nodes": [
                {"name": "a", "address": "local", "rpc": {"port": 50052}},
                {"name": "b", "address": "local", "rpc": {"port": 50053}, "ollama": {"port": 11435}},
                {"name": "c", "address": "local", "ollama": {}},
                {"name": "d", "address": "10.0.0.4", "rpc": {}},
            ]
        }
    )
    assert [rpc_servers_on_machine(c, node) for node in c.nodes] == [2, 2, 2, 1]


def test_rpc_without_cache() -> None:
    (rpc,) = specs({"rpc": {"cache": False, "bind": "127.0.0.1"}})
    assert rpc.argv == ("$HOME/.sollol/bin/rpc-server", "-H", "127.0.0.1", "-p", "50052")


def test_ollama_env_and_models() -> None:
    (ollama,) = specs({"ollama": {"port": 11500, "models": ["tiny"], "environment": {"OLLAMA_NUM_PARALLEL": 2}}})
    assert ollama.argv == ("ollama", "serve")
    assert ollama.env == (("OLLAMA_HOST", "10.0.0.1:11500"), ("OLLAMA_NUM_PARALLEL", "2"))
    assert ollama.models == ("tiny",)


def test_rpc_environment() -> None:
    (rpc,) = specs({"rpc": {"environment": {"GGML_VK_VISIBLE_DEVICES": 0, "B": "x y"}}})
    assert rpc.env == (("B", "x y"), ("GGML_VK_VISIBLE_DEVICES", "0"))
    assert detached_start(rpc).count("env B='x y' GGML_VK_VISIBLE_DEVICES=0 ") == 1
    (plain,) = specs({"rpc": {}})
    assert plain.env == ()
    assert plain.digest != rpc.digest


def test_backend_changes_the_digest_but_cpu_keeps_the_old_one() -> None:
    """A switch of build restarts the service even where the binaries' path and checksum stay the same (the
    user's own binaries); cpu adds nothing, so services started before backends existed are not restarted."""
    c = Cluster.model_validate({"name": "lab", "nodes": [{"name": "n1", "address": "10.0.0.1", "rpc": {}}]})
    sources = binary_sources(c.llama_cpp, {"rpc-server": ("/c/rpc-server", SHA)})
    (cpu,) = node_services("lab", c.nodes[0], sources)
    (vulkan,) = node_services("lab", c.nodes[0], sources, backend="vulkan")
    (cuda,) = node_services("lab", c.nodes[0], sources, backend="cuda")
    assert len({cpu.digest, vulkan.digest, cuda.digest}) == 3
    before = json.dumps([cpu.argv, cpu.env, cpu.binary_sha256], separators=(",", ":"))
    assert cpu.digest == hashlib.sha256(before.encode()).hexdigest()[:16]


def test_build_sources_per_backend() -> None:
    nodes = [{"name": "n1", "address": "10.0.0.1", "rpc": {}}]
    c = Cluster.model_validate({"name": "lab", "nodes": nodes})
    cpu = LocalBuild({"rpc-server": ("/c/rpc-server", SHA)}, "cpu 0.3.36")
    vulkan = LocalBuild({"rpc-server": ("/c/vk/rpc-server", "e" * 64)}, "vulkan 0.3.36")
    builds = build_sources(c.llama_cpp, {"cpu": cpu, "vulkan": vulkan})
    assert builds == {
        "cpu": {"rpc-server": BinarySource("rpc-server", "$HOME/.sollol/bin/rpc-server", "/c/rpc-server", SHA, "cpu 0.3.36")},
        "vulkan": {"rpc-server": BinarySource(
            "rpc-server", "$HOME/.sollol/bin/vulkan/rpc-server", "/c/vk/rpc-server", "e" * 64, "vulkan 0.3.36"
        )},
    }  # fmt: skip
    user = LocalBuild({"rpc-server": ("/mine/rpc-server", SHA)}, "bin_dir", user=True)
    mine = build_sources(c.llama_cpp, dict.fromkeys(("cpu", "cuda"), user))
    expected = BinarySource("rpc-server", "$HOME/.sollol/bin/rpc-server", "/mine/rpc-server", SHA, "bin_dir")
    assert mine["cuda"] == mine["cpu"] == {"rpc-server": expected}
    on_node = Cluster.model_validate({"name": "lab", "nodes": nodes, "llama_cpp": {"node_bin_dir": "/opt/llama/"}})
    given = build_sources(on_node.llama_cpp, {})
    assert sorted(given) == ["cpu", "cuda", "rocm", "vulkan"]
    assert given["rocm"]["rpc-server"] == BinarySource("rpc-server", "/opt/llama/rpc-server", build="node_bin_dir")


def test_llamacpp_argv() -> None:
    (llama,) = specs({"llamacpp": {"model": "/models/tiny.gguf", "slots": 2, "context": 2048}})
    assert llama.argv == (
        "$HOME/.sollol/bin/llama-server", "-m", "/models/tiny.gguf", "--host", "10.0.0.1", "--port", "8080",
        "-np", "2", "-ngl", "999", "--metrics", "-c", "2048", "--alias", "tiny",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "flags"),
    [
        ({}, []),
        ({"embeddings": False}, []),
        ({"embeddings": True}, ["--embeddings", "--pooling", "last"]),
        ({"embeddings": True, "pooling": "mean"}, ["--embeddings", "--pooling", "mean"]),
        ({"embeddings": True, "pooling": "cls"}, ["--embeddings", "--pooling", "cls"]),
        ({"embeddings": True, "pooling": "model"}, ["--embeddings"]),
    ],
)
def test_llamacpp_embeddings_flags(settings: dict[str, object], flags: list[str]) -> None:
    (llama,) = specs({"llamacpp": {"model": "/models/tiny.gguf", **settings}})
    assert list(llama.argv[llama.argv.index("--alias") + 2 :]) == flags


def test_embeddings_change_the_digest() -> None:
    (off,) = specs({"llamacpp": {"model": "/m.gguf"}})
    (on,) = specs({"llamacpp": {"model": "/m.gguf", "embeddings": True}})
    (mean,) = specs({"llamacpp": {"model": "/m.gguf", "embeddings": True, "pooling": "mean"}})
    assert len({off.digest, on.digest, mean.digest}) == 3


def test_digest_changes_with_settings_and_binary() -> None:
    (a,) = specs({"rpc": {}})
    (b,) = specs({"rpc": {"threads": 2}})
    assert a.digest != b.digest
    assert a.digest == specs({"rpc": {}})[0].digest


def test_unit_text() -> None:
    (ollama,) = specs({"ollama": {"environment": {"OLLAMA_KEEP_ALIVE": "10m"}}})
    assert unit_text(ollama, home="/root") == "\n".join([
        "[Unit]",
        "Description=sollol ollama on 10.0.0.1:11434",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "ExecStart=ollama serve",
        "Environment=OLLAMA_HOST=10.0.0.1:11434",
        "Environment=OLLAMA_KEEP_ALIVE=10m",
        "StandardOutput=append:/root/.sollol/lab/n1/log/sollol-lab-ollama-11434.log",
        "StandardError=append:/root/.sollol/lab/n1/log/sollol-lab-ollama-11434.log",
        "Restart=always",
        "RestartSec=2",
        f"X-SollolDigest={ollama.digest}",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])  # fmt: skip


def test_detached_start_and_stop_really_work(tmp_path: Path) -> None:
    """Run the generated shell on this machine: the process survives its shell, stop kills exactly it."""
    (spec,) = specs({"llamacpp": {"model": "/m.gguf"}})
    # Same shell text, with a harmless long-running command instead of llama-server.
    sleeper = spec.__class__(**{**spec.__dict__, "argv": (sys.executable, "-c", "import time; time.sleep(60)")})
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", detached_start(sleeper)], env=env, capture_output=True, text=True, timeout=10)
    pid, start = (int(x) for x in out.stdout.split())
    pidfile = tmp_path / ".sollol/lab/n1/run/sollol-lab-llamacpp-8080.pid"
    assert pidfile.read_text().split() == [str(pid), str(start), sleeper.digest, "llamacpp", "10.0.0.1", "8080"]
    facts = parse_facts(subprocess.run(["bash", "-c", facts_script("lab", "n1", [], None)], env=env, capture_output=True,
                                       text=True, timeout=10).stdout)  # fmt: skip
    assert facts.services[sleeper.name].alive
    assert facts.services[sleeper.name].pid == pid
    # a stale start time (pid reuse) must not kill the process
    assert subprocess.run(["bash", "-c", stop_text(pid, start + 1)], capture_output=True, text=True).stdout == "gone\n"
    assert Path(f"/proc/{pid}").exists()
    stopped = subprocess.run(["bash", "-c", stop_text(pid, start)], capture_output=True, text=True, timeout=10)
    assert stopped.stdout.strip() in {"stopped", "killed"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "gone"
        if state in {"gone", "Z"}:
            break
        time.sleep(0.05)
    assert state in {"gone", "Z"}


def test_parse_facts() -> None:
    text = "\n".join([
        "os=Linux", "arch=x86_64", "hostname=node1", "user=root", "home=/root", "systemd=system",
        "mem_total_kb=16384", "mem_available_kb=8192", "nvidia=NVIDIA GeForce RTX 4090, 24576, 20000, 550.54",
        f"bin=$HOME/.sollol/bin/rpc-server {SHA}",
        "ollama_path=/usr/local/bin/ollama", "ollama_version=ollama version is 0.5.7",
        "svc=sollol-lab-rpc-50052 123 456 abcd rpc 10.0.0.1 50052 alive",
        "svc=broken 1 2",
        "unit=sollol-lab-ollama-11434 systemd-system dd ollama 10.0.0.1 11434 dead",
        'listen=10.0.0.1:50052 users:(("rpc-server",pid=123,fd=3))',
        "listen=[::]:22 users:((\"sshd\",pid=9,fd=4))",
        "listen=*:80",
    ])  # fmt: skip
    facts = parse_facts(text)
    assert (facts.os, facts.arch, facts.hostname, facts.systemd) == ("Linux", "x86_64", "node1", "system")
    assert facts.mem_total_bytes == 16384 * 1024
    assert [(a.memory_free, a.memory_total) for a in facts.accelerators] == [(20000 * 2**20, 24576 * 2**20)]
    assert facts.binaries == {"$HOME/.sollol/bin/rpc-server": SHA}
    assert facts.ollama_version == "0.5.7"
    assert set(facts.services) == {"sollol-lab-rpc-50052", "sollol-lab-ollama-11434"}
    assert facts.services["sollol-lab-ollama-11434"].manager == "systemd-system"
    assert not facts.services["sollol-lab-ollama-11434"].alive
    assert facts.listener_on("10.0.0.1", 50052).pid == 123  # type: ignore[union-attr]
    assert facts.listener_on("10.0.0.7", 22).process == "sshd"  # type: ignore[union-attr]
    assert facts.listener_on("10.0.0.7", 80) is not None
    assert facts.listener_on("10.0.0.7", 81) is None
