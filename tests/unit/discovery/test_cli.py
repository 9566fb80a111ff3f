"""`sollol discover` through the CLI: refusals (clear one-line errors, exit 2, nothing scanned), the
manifest's subnets as the default, and the table, --json and --write against the Ollama stand-in on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.ollama import StandinFactory
from tests.unit.cli_helpers import invoke


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["8.8.8.0/24"], "error: 8.8.8.0/24 is not a private or loopback range; sollol scans your own lab; "
                         "pass --force only for ranges you are allowed to scan\n"),
        (["10.0.0.0/8"], "error: 10.0.0.0/8 is larger than a /16 (16777216 addresses); scan smaller ranges, "
                         "or pass --force if you really mean it\n"),
        (["10.0.0/24x"], "error: '10.0.0/24x' is not a CIDR; write it like 192.168.1.0/24 or 10.0.0.5/32\n"),
        (["127.0.0.1/32", "--ports", "80,x"], "error: --ports: 'x' is not a port number; e.g. --ports 11434,8080,50052\n"),
        ([], "error: nothing to scan: give a CIDR such as 192.168.1.0/24; or set discovery.subnets in the manifest, "
             "or use --local for this machine's subnets\n"),
    ],
)  # fmt: skip
def test_refusals(args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./cluster.yaml
    result = invoke("discover", *args)
    assert result.exit_code == 2
    assert result.stderr == message
    assert result.stdout == ""


def test_manifest_subnets_are_the_default(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("name: lab\ndiscovery: {subnets: [127.0.0.1/32], ports: [9]}\n")
    result = invoke("discover", "-f", str(path), "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert '"networks": [\n    "127.0.0.1/32"\n  ]' in result.stdout
    assert '"ports": [\n    9\n  ]' in result.stdout


@pytest.fixture
def fake_ollama(ollama_standin: StandinFactory) -> int:
    return ollama_standin({"version": "0.12.3"}).port


def test_table_and_write_through_the_cli(fake_ollama: int, tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("# lab\nname: lab   # mine\n")
    result = invoke("discover", "127.0.0.1/32", "--ports", str(fake_ollama), "--write", "-f", str(path), "-q")
    assert result.exit_code == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["address", "port", "kind", "state", "version", "models", "/", "memory", "latency"]
    assert row.split()[:6] == ["127.0.0.1", str(fake_ollama), "ollama", "ready", "0.12.3", "tiny:latest"]
    assert result.stderr.splitlines()[-1] == f"added 1 backends to {path}"
    assert path.read_text() == (
        "# lab\nname: lab   # mine\nbackends:\n"
        f"  - {{kind: ollama, address: 127.0.0.1, port: {fake_ollama}}}  # found by sollol discover: ollama 0.12.3\n"
    )
    assert invoke("validate", str(path)).exit_code == 0
    again = invoke("discover", "127.0.0.1/32", "--ports", str(fake_ollama), "--write", "-f", str(path), "--json")
    data = json.loads(again.stdout)
    assert [(f["kind"], f["version"], f["models"]) for f in data["found"]] == [("ollama", "0.12.3", ["tiny:latest"])]
    assert data["written"] == [] and data["silent"] == []
