"""`discover --write`: new backends appended, comments and order kept, nothing duplicated, still valid."""

from __future__ import annotations

from pathlib import Path

from sollol_cli.discovery.fingerprint import Found
from sollol_cli.discovery.write import add_backends, new_backends
from sollol_cli.manifest.loader import load_manifest, parse_yaml, validate_document

MANIFEST = """\
# my lab
name: lab  # the name
nodes:
  # the big one
  - name: gpu1
    address: 10.0.0.1
    rpc: {port: 50052}   # sharding
backends:
  - {kind: ollama, address: 10.0.0.9}  # Bob's Ollama
models:
  - name: tiny
"""

FOUND = [
    Found("10.0.0.1", 50052, "rpc", "ready", "7.0.0"),  # already a node role
    Found("10.0.0.9", 11434, "ollama", "ready", "0.12.0"),  # already a backend
    Found("10.0.0.7", 8080, "llamacpp", "ready", "b0-0c1e57098", ("tiny",)),
    Found("10.0.0.8", 50052, "rpc", "busy", None),
    Found("10.0.0.8", 8080, "unknown", "unknown"),  # never written
]


def test_write_adds_exactly_the_new_backends_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MANIFEST)
    loaded = load_manifest(path)
    additions = new_backends(loaded.cluster, FOUND)
    assert [(f.address, f.port) for f in additions] == [("10.0.0.7", 8080), ("10.0.0.8", 50052)]
    text = add_backends(loaded.document, additions)
    assert text == (
        "# my lab\n"
        "name: lab  # the name\n"
        "nodes:\n"
        "  # the big one\n"
        "  - name: gpu1\n"
        "    address: 10.0.0.1\n"
        "    rpc: {port: 50052}   # sharding\n"
        "backends:\n"
        "  - {kind: ollama, address: 10.0.0.9}  # Bob's Ollama\n"
        "  - {kind: llamacpp, address: 10.0.0.7, port: 8080} # found by sollol discover: llamacpp b0-0c1e57098\n"
        "  - {kind: rpc, address: 10.0.0.8, port: 50052} # found by sollol discover: rpc\n"
        "models:\n"
        "  - name: tiny\n"
    )
    cluster = validate_document(parse_yaml(text, str(path)), str(path))
    assert [b.label for b in cluster.backends] == [
        "ollama@10.0.0.9:11434",
        "llamacpp@10.0.0.7:8080",
        "rpc@10.0.0.8:50052",
    ]
    # a second run finds nothing new
    path.write_text(text)
    assert new_backends(load_manifest(path).cluster, FOUND) == []


def test_write_creates_the_backends_section(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("name: lab\n")
    loaded = load_manifest(path)
    text = add_backends(loaded.document, new_backends(loaded.cluster, FOUND[2:3]))
    assert text == (
        "name: lab\n"
        "backends:\n"
        "  - {kind: llamacpp, address: 10.0.0.7, port: 8080}  # found by sollol discover: llamacpp b0-0c1e57098\n"
    )
