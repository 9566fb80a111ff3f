"""`sollol status` against a mixed cluster: an Ollama stand-in, a real llama-server, an rpc-server held
busy by a coordinator, an idle rpc-server and a backend that is down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.llama import ServerGroup, free_port
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real


def test_status_shows_every_backend(
    ollama_standin, llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    standin = ollama_standin({"name": "ol", "loaded": ["tiny:latest"]})
    llama = llama_servers.llama_server(tiny_gguf, extra=["--alias", "tiny"])
    busy = llama_servers.rpc_server()
    idle = llama_servers.rpc_server()
    llama_servers.llama_server(tiny_gguf, rpc=[busy.endpoint])  # a coordinator someone started: busy
    down = free_port()
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
    rows = {row["name"]: row for row in data["backends"]}
    assert (data["reachable"], data["total"]) == (4, 5)
    assert {name: row["reachable"] for name, row in rows.items()} == {
        "ol": "yes", "ls": "yes", "busy": "busy", "idle": "yes", "gone": "no",
    }  # fmt: skip
    assert rows["ol"]["models"] and rows["ol"]["loaded"] == ["tiny:latest"]
    assert rows["ls"]["models"] == ["tiny"] and rows["ls"]["version"] == "b0-0c1e57098"
    assert rows["idle"]["version"] == "rpc 7.0.0" and rows["idle"]["total_bytes"] > 0
    assert (
        rows["busy"]["error"].startswith("no HELLO reply within ")
        and "another client is attached" in rows["busy"]["error"]
    )
    assert "connection refused" in rows["gone"]["error"].lower()

    table = invoke("status", "-f", str(path))
    lines = [line.rstrip() for line in table.stdout.splitlines()]
    assert lines[0] == "cluster 'mixed': 4/5 backends reachable"
    assert lines[1].split() == ["backend", "kind", "address", "state", "version", "models", "(*loaded)", "free", "busy"]
    states = {line.split()[0]: line.split()[3] for line in lines[2:7]}
    assert states == {"ol": "up", "ls": "up", "busy": "busy", "idle": "up", "gone": "down"}
    assert any(line.startswith("gone: ") for line in lines[7:])


def test_status_exit_4_when_nothing_answers(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(f"name: dark\nbackends:\n  - {{kind: ollama, address: 127.0.0.1, port: {free_port()}}}\n")
    result = invoke("status", "-f", str(path))
    assert result.exit_code == 4
    assert result.stdout.splitlines()[0].rstrip() == "cluster 'dark': 0/1 backends reachable"
