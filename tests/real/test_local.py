"""The one-machine path: `address: local` nodes, examples/clusters/localhost.yaml and `sollol demo`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from tests.harness.sshhosts import TestHosts
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "clusters" / "localhost.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_bins, tiny_gguf: Path) -> Path:  # type: ignore[no-untyped-def]
    """A private $HOME for local nodes (their ~/.sollol), keeping the machine's llama.cpp and model cache."""
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(Settings().cache_dir))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running_pidfiles(home: Path) -> list[Path]:
    return sorted(home.glob(".sollol/*/*/run/*.pid"))


def test_demo_shows_both_kinds_and_leaves_nothing_running(home: Path, tmp_path: Path) -> None:
    result = invoke("demo", "-q")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("(sollol's tiny random-weight demo model)")
    sharded = lines.index("demo-sharded — sharded: the model split by layers over two rpc-servers")
    assert lines[sharded + 1].startswith("  placement 127.0.0.1:")
    assert ": layers 0-4, model " in lines[sharded + 1] and ": layers 5-8, model " in lines[sharded + 2]
    assert lines[sharded + 3].startswith("  placement coordinator (this machine): token embeddings")
    assert lines[sharded + 4].startswith("  speed: ") and "tokens/s (48 tokens" in lines[sharded + 4]
    distributed = lines.index("demo — distributed: the whole model on one llama-server")
    assert lines[distributed + 1].startswith("  speed: ") and "tokens/s (48 tokens" in lines[distributed + 1]
    # greedy decoding: the sharded and the single-process answers are the same tokens
    assert lines[sharded + 5] == lines[distributed + 2].replace("  answer: ", "  answer: ")
    assert "Note: the demo model has random weights, so its answers are gibberish by design." in lines
    assert any(line.startswith("Note: on one machine sharding is slower, not faster.") for line in lines)
    assert lines[-1] == "Everything the demo started is stopped again (use --keep to leave it running)."
    assert running_pidfiles(home) == []
    state = Path(os.environ["SOLLOL_STATE_DIR"])
    assert list((state / "clusters" / "localhost" / "coordinators").glob("*.json")) == []


def test_demo_keep_then_down(home: Path) -> None:
    result = invoke("demo", "--keep", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kept"] is True
    assert [r["mode"] for r in data["results"]] == ["shard", "distribute"]
    assert len(running_pidfiles(home)) == 3
    down = invoke("down", data["manifest"], "-q")
    assert down.exit_code == 0, down.stderr
    assert running_pidfiles(home) == []


def test_localhost_example_up_run_status_down(home: Path, tiny_gguf: Path) -> None:
    model = home / ".cache" / "sollol" / "models" / "demo.gguf"
    model.parent.mkdir(parents=True)
    model.symlink_to(tiny_gguf)
    up = invoke("up", str(EXAMPLE), "--json")
    assert up.exit_code == 0, up.stdout
    assert [n["status"] for n in json.loads(up.stdout)["nodes"]] == ["changed", "changed", "changed"]
    assert all(listening(port) for port in (50052, 50053, 8080))
    whole = invoke("run", "demo", "Hello", "--temperature", "0", "--num-predict", "12", "-f", str(EXAMPLE))
    sharded = invoke("run", "demo-sharded", "Hello", "--temperature", "0", "--num-predict", "12", "-f", str(EXAMPLE))
    assert whole.exit_code == sharded.exit_code == 0, whole.stderr + sharded.stderr
    assert sharded.stdout == whole.stdout and len(whole.stdout.split()) > 2
    status = invoke("status", "--json", "-f", str(EXAMPLE))
    rows = {r["name"]: r for r in json.loads(status.stdout)["backends"]}
    assert {name: r["reachable"] for name, r in rows.items()} == {"shard-a": "busy", "shard-b": "busy", "whole": "yes"}
    assert rows["whole"]["models"] == ["demo"]
    down = invoke("down", str(EXAMPLE), "-q")
    assert down.exit_code == 0, down.stderr
    assert not any(listening(port) for port in (50052, 50053, 8080))
    assert running_pidfiles(home) == []


def test_one_up_provisions_a_local_node_and_ssh_nodes(
    home: Path, ssh_nodes: TestHosts, llama_bins, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    node = ssh_nodes.nodes[0]
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text(
        ssh_nodes.manifest_yaml({node.name: "rpc: {port: 50252}"}, name="mixed", nodes=[node])
        + "  - name: controller\n    address: local\n    rpc: {port: 50252}\n"
    )
    up = invoke("up", str(manifest), "--json")
    data = json.loads(up.stdout)
    assert up.exit_code == 0, data
    assert [(n["node"], n["status"]) for n in data["nodes"]] == [(node.name, "changed"), ("controller", "changed")]
    assert [s["address"] for n in data["nodes"] for s in n["services"]] == [f"{node.address}:50252", "127.0.0.1:50252"]
    assert listening(50252)
    assert invoke("down", str(manifest), "-q").exit_code == 0
    assert not listening(50252)
