"""`sollol status` against real backends: an Ollama stand-in, a real llama-server, rpc-servers that are idle,
held by a coordinator someone else started or by the coordinator sollol started, and a backend that is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from sollol_cli.sharding.coordinator import alive, all_records
from sollol_cli.sharding.lifecycle import coordinator_home, stop_all
from tests.harness.llama import ServerGroup, free_port
from tests.harness.models import OllamaStore
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real


def test_status_shows_every_backend(
    ollama_standin, llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    standin = ollama_standin({"name": "ol", "loaded": ["tiny:latest"], "version": "0.12.9"})
    llama = llama_servers.llama_server(tiny_gguf, extra=["--alias", "tiny"])
    busy = llama_servers.rpc_server()
    idle = llama_servers.rpc_server()
    llama_servers.llama_server(tiny_gguf, rpc=[busy.endpoint])  # a coordinator someone started: busy
    down = free_port()  # nothing listens: refused
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: mixed\nbackends:\n"
        f"  - {{name: ol, kind: ollama, address: 127.0.0.1, port: {standin.port}}}\n"
        f"  - {{name: ls, kind: llamacpp, address: 127.0.0.1, port: {llama.port}}}\n"
        f"  - {{name: busy, kind: rpc, address: 127.0.0.1, port: {busy.port}}}\n"
        f"  - {{name: idle, kind: rpc, address: 127.0.0.1, port: {idle.port}}}\n"
        f"  - {{name: gone, kind: ollama, address: 127.0.0.1, port: {down}}}\n"
    )
    result = invoke("status", "--json", "-f", str(path))
    assert result.exit_code == 1  # some backends are down
    data = json.loads(result.stdout)
    assert [row["name"] for row in data["backends"]] == ["ol", "ls", "busy", "idle", "gone"]  # manifest order
    rows = {row["name"]: row for row in data["backends"]}
    assert (data["reachable"], data["total"]) == (4, 5)
    assert {name: row["reachable"] for name, row in rows.items()} == {
        "ol": "yes", "ls": "yes", "busy": "busy", "idle": "yes", "gone": "no",
    }  # fmt: skip
    assert rows["ol"]["version"] == "0.12.9"
    assert rows["ol"]["models"] == ["tiny:latest"] and rows["ol"]["loaded"] == ["tiny:latest"]
    assert rows["ls"]["models"] == ["tiny"] and rows["ls"]["version"] == "b0-0c1e57098"
    assert (rows["ls"]["slots"], rows["ls"]["in_flight"]) == (1, 0)
    assert rows["idle"]["version"] == "rpc 7.0.0" and rows["idle"]["total_bytes"] > 0
    assert (
        rows["busy"]["error"].startswith("no HELLO reply within ")
        and "another client is attached" in rows["busy"]["error"]
    )
    assert rows["gone"]["error"] == f"gone (127.0.0.1:{down}): connection refused"
    assert all(rows[name]["error"] is None for name in ("ol", "ls", "idle"))

    table = invoke("status", "-f", str(path))
    assert table.exit_code == 1
    lines = [line.rstrip() for line in table.stdout.splitlines()]
    assert lines[0] == "cluster 'mixed': 4/5 backends reachable"
    assert lines[1].split() == ["backend", "kind", "address", "state", "version", "models", "(*loaded)", "free", "busy"]
    cells = {line.split()[0]: line.split() for line in lines[2:7]}
    assert {name: row[3] for name, row in cells.items()} == {
        "ol": "up", "ls": "up", "busy": "busy", "idle": "up", "gone": "down",
    }  # fmt: skip
    assert cells["ol"][4:6] == ["0.12.9", "tiny:latest*"]  # * = loaded
    assert cells["ls"][4:6] == ["b0-0c1e57098", "tiny*"] and cells["ls"][-1] == "0/1"
    assert cells["idle"][4:6] == ["rpc", "7.0.0"]
    # the problems, one line each under the table, only for the backends that have one
    problems = lines[7:]
    assert problems[0].startswith("busy: no HELLO reply within ") and problems[0].endswith(
        "(another client is attached)"
    )
    assert problems[1:] == [f"gone (127.0.0.1:{down}): connection refused"]  # named once


@pytest.fixture
def shard_cluster(llama_servers: ServerGroup, llama_bins, ollama_store: OllamaStore, tmp_path: Path) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """Two local rpc-servers and a model sollol must shard over them; its coordinators are stopped after."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, binary in (("rpc-server", llama_bins.rpc_server), ("llama-server", llama_bins.llama_server)):
        (bin_dir / name).symlink_to(binary)
    first, second = llama_servers.rpc_server(), llama_servers.rpc_server()
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: sharded\nbackends:\n"
        f"  - {{name: r1, kind: rpc, address: 127.0.0.1, port: {first.port}}}\n"
        f"  - {{name: r2, kind: rpc, address: 127.0.0.1, port: {second.port}}}\n"
        f"llama_cpp: {{bin_dir: {bin_dir}}}\n"
        f"models:\n  - {{name: tiny, mode: shard, store: {ollama_store.root}, context: 512}}\n"
    )
    try:
        yield path
    finally:
        stop_all(Settings(), "sharded")


def test_status_shows_rpc_servers_held_by_sollols_coordinator(shard_cluster: Path) -> None:
    before = json.loads(invoke("status", "--json", "-f", str(shard_cluster)).stdout)
    assert [row["reachable"] for row in before["backends"]] == ["yes", "yes"]
    assert before["models"][0]["coordinator"] is None

    ran = invoke("run", "tiny", "hi", "--num-predict", "2", "-f", str(shard_cluster))
    assert ran.exit_code == 0, ran.stderr
    (record,) = all_records(coordinator_home(Settings(), "sharded"))
    assert alive(record)  # it stays loaded for the next request, holding both rpc-servers

    result = invoke("status", "--json", "-f", str(shard_cluster))
    assert result.exit_code == 0  # busy is reachable: it is working
    data = json.loads(result.stdout)
    assert [(row["name"], row["reachable"]) for row in data["backends"]] == [("r1", "busy"), ("r2", "busy")]
    assert all(row["error"].startswith("attached to the coordinator for 'tiny'") for row in data["backends"])
    (model,) = data["models"]
    assert model["mode"] == "shard" and model["coordinator"] == {
        "pid": record.pid,
        "host": "127.0.0.1",
        "port": record.port,
        "node": None,
    }
    for line, endpoint in zip(model["placement"], record.rpc, strict=False):  # layers spread over both
        assert line.startswith(f"placement {endpoint}: layers ") and ": layers -," not in line, line
    assert len(model["placement"]) >= 2

    lines = [line.rstrip() for line in invoke("status", "-f", str(shard_cluster)).stdout.splitlines()]
    assert lines[0] == "cluster 'sharded': 2/2 backends reachable"
    assert [line.split()[3] for line in lines[2:4]] == ["busy", "busy"]
    assert lines[4].startswith("r1: attached to the coordinator for 'tiny'")
    assert "models:" in lines and any(line.startswith("tiny: shard (set in the manifest)") for line in lines)


def test_status_exit_4_when_nothing_answers(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"name: dark\nbackends:\n  - {{kind: ollama, address: 127.0.0.1, port: {free_port()}}}\n")
    result = invoke("status", "-f", str(path))
    assert result.exit_code == 4
    assert result.stdout.splitlines()[0].rstrip() == "cluster 'dark': 0/1 backends reachable"
