"""Every example manifest validates, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.cli_helpers import invoke

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "clusters").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    result = invoke("validate", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nodes"], "an example without nodes shows nothing"
    assert data["models"]


def test_validate_json_exact(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: lab\n"
        "nodes:\n"
        "  - name: a\n    address: 10.0.0.1\n    rpc: {port: 50053}\n    ollama: {}\n"
        "  - name: me\n    address: local\n    llamacpp: {model: /m/tiny.gguf}\n"
        "backends:\n  - {kind: rpc, address: 10.0.0.9}\n"
        "models:\n  - {name: tiny, mode: shard, context: 2048}\n  - {name: other, gguf: /m/o.gguf}\n"
    )
    result = invoke("validate", str(path), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "manifest": str(path),
        "cluster": "lab",
        "nodes": [
            {
                "name": "a",
                "address": "10.0.0.1",
                "transport": "ssh",
                "roles": {"ollama": 11434, "rpc": 50053},
            },
            {"name": "me", "address": "local", "transport": "local", "roles": {"llamacpp": 8080}},
        ],
        "backends": [{"name": "rpc@10.0.0.9:50052", "kind": "rpc", "address": "10.0.0.9", "port": 50052}],
        "models": [
            {"name": "tiny", "mode": "shard", "source": "ollama:tiny", "context": 2048},
            {"name": "other", "mode": "auto", "source": "/m/o.gguf", "context": 4096},
        ],
        "warnings": [],
    }


def test_validate_table_and_warnings(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "ssh: {host_key_policy: 'off'}\n"
        "nodes:\n  - name: a\n    address: 10.0.0.1\n    rpc: {bind: 0.0.0.0}\n"
        "models:\n  - {name: tiny}\n"
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert result.stdout == ""
    lines = [line.rstrip() for line in result.stderr.splitlines()]
    assert lines == [
        f"✓ {path} is valid: cluster 'cluster'",
        "nodes (1)",
        "name  address   transport  roles",
        "a     10.0.0.1  ssh        rpc:50052",
        "models (1)",
        "name  mode  source       context",
        "tiny  auto  ollama:tiny  4096",
        "warning: ssh.host_key_policy is 'off': host keys are NOT verified, anyone on the path can impersonate nodes",
        "warning: a: rpc-server bound to 0.0.0.0: it has no authentication; anyone who can reach the port can run "
        "code on the node",
    ]
