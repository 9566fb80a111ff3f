"""`discover --write`: new backends appended, every other byte of the file kept, nothing duplicated, still valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from sollol_cli.discovery.fingerprint import Found
from sollol_cli.discovery.write import add_backends, host_names, new_backends, resolve_names, update_manifest
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
    Found("10.0.0.9", 11434, "ollama", "ready", "0.12.0"),  # already a backend (default port)
    Found("10.0.0.7", 8080, "llamacpp", "ready", "b0-0c1e57098", ("tiny",)),
    Found("10.0.0.8", 50052, "rpc", "busy", None),
    Found("10.0.0.8", 8080, "unknown", "unknown"),  # never written
]
NEW = FOUND[2:4]
LLAMA = "{kind: llamacpp, address: 10.0.0.7, port: 8080}  # found by sollol discover: llamacpp b0-0c1e57098"
RPC = "{kind: rpc, address: 10.0.0.8, port: 50052}  # found by sollol discover: rpc"


def valid(text: str) -> list[str]:
    return [b.label for b in validate_document(parse_yaml(text, "m.yaml"), "m.yaml").backends]


def test_only_backends_not_in_the_manifest_are_new(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MANIFEST)
    assert new_backends(load_manifest(path).cluster, FOUND) == NEW
    assert new_backends(load_manifest(path).cluster, FOUND + FOUND) == NEW  # a result listed twice: written once


def test_entries_go_after_the_last_backend_and_nothing_else_changes() -> None:
    edit = add_backends(MANIFEST, NEW)
    assert edit.kept_layout
    assert edit.text == MANIFEST.replace("models:\n", f"  - {LLAMA}\n  - {RPC}\nmodels:\n")
    assert valid(edit.text) == ["ollama@10.0.0.9:11434", "llamacpp@10.0.0.7:8080", "rpc@10.0.0.8:50052"]


def test_the_files_own_indentation_and_comment_columns_are_kept() -> None:
    text = (
        "name: lab\n"
        "nodes:\n"
        "- name: gpu1    # big\n"
        "  address: 10.0.0.1\n"
        "  rpc:\n"
        "      port: 50052\n"
        "backends:\n"
        "- kind: ollama   # bob\n"
        "  address: 10.0.0.9\n"
        "\n"
        "  # trailing notes stay below the new entries\n"
        "models:\n"
        "- name: tiny\n"
    )
    edit = add_backends(text, NEW)
    assert edit.kept_layout
    assert edit.text == text.replace("  address: 10.0.0.9\n", f"  address: 10.0.0.9\n- {LLAMA}\n- {RPC}\n")
    assert valid(edit.text)[1:] == ["llamacpp@10.0.0.7:8080", "rpc@10.0.0.8:50052"]


def test_a_missing_backends_section_is_added_at_the_end_in_the_files_style() -> None:
    text = "# lab\nname: lab\nnodes:\n- name: gpu1\n  address: 10.0.0.1   # no newline at the end"
    edit = add_backends(text, NEW)
    assert edit.kept_layout
    assert edit.text == text + f"\nbackends:\n- {LLAMA}\n- {RPC}\n"
    assert add_backends("name: lab\n", NEW[:1]).text == f"name: lab\nbackends:\n  - {LLAMA}\n"


def test_an_empty_flow_list_becomes_a_block_list() -> None:
    edit = add_backends("name: lab\nbackends: []   # none yet\nmodels: []\n", NEW[:1])
    assert edit.text == f"name: lab\nbackends:   # none yet\n  - {LLAMA}\nmodels: []\n"
    assert edit.kept_layout


def test_windows_line_endings_are_kept() -> None:
    edit = add_backends(MANIFEST.replace("\n", "\r\n"), NEW)
    assert edit.text == MANIFEST.replace("models:\n", f"  - {LLAMA}\n  - {RPC}\nmodels:\n").replace("\n", "\r\n")


def test_a_layout_it_cannot_extend_is_rewritten_by_ruamel_keeping_comments() -> None:
    text = "# lab\nname: lab\nbackends: [{kind: ollama, address: 10.0.0.9}]  # Bob\nmodels:\n- name: tiny  # small\n"
    edit = add_backends(text, NEW[:1])
    assert not edit.kept_layout
    assert "# lab\n" in edit.text and "# Bob" in edit.text and "# small" in edit.text
    assert valid(edit.text) == ["ollama@10.0.0.9:11434", "llamacpp@10.0.0.7:8080"]


def test_a_version_string_from_the_network_cannot_inject_yaml() -> None:
    hostile = Found("10.0.0.7", 8080, "llamacpp", "ready", "1.0\nmodels: [{name: evil}]\n#")
    text = add_backends("name: lab\n", [hostile]).text
    assert text.count("\n") == 3
    assert validate_document(parse_yaml(text, "m.yaml"), "m.yaml").models == []


def test_host_names_in_the_manifest_count_as_their_addresses(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: lab\nnodes:\n  - {name: n1, address: gpu1.lan, rpc: {}}\nbackends:\n  - {kind: ollama, address: ollama.lan}\n"
    )
    cluster = load_manifest(path).cluster
    assert host_names(cluster) == ["gpu1.lan", "ollama.lan"]
    found = [Found("10.0.0.1", 50052, "rpc", "ready"), Found("10.0.0.2", 11434, "ollama", "ready", "0.12.0")]
    assert new_backends(cluster, found) == found
    assert new_backends(cluster, found, {"gpu1.lan": {"10.0.0.1"}, "ollama.lan": {"10.0.0.2"}}) == []


async def test_resolve_names_uses_the_system_resolver() -> None:
    # "localhost" comes from /etc/hosts: no DNS server is asked
    assert "127.0.0.1" in (await resolve_names(["localhost"]))["localhost"]


def test_update_manifest_writes_in_place_and_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(MANIFEST)
    path.chmod(0o640)
    result = update_manifest(path, FOUND)
    assert result.added == NEW and result.kept_layout
    assert path.read_text() == add_backends(MANIFEST, NEW).text
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*"))  # no temp file left behind
    # a second run finds nothing new and leaves the file alone
    assert update_manifest(path, FOUND).added == []
    assert path.read_text() == add_backends(MANIFEST, NEW).text


def test_update_manifest_refuses_to_write_an_invalid_manifest(tmp_path: Path) -> None:
    from sollol_cli.errors import ManifestError

    path = tmp_path / "cluster.yaml"
    path.write_text("name: lab\nbogus: 1\n")
    with pytest.raises(ManifestError):
        update_manifest(path, FOUND)
    assert path.read_text() == "name: lab\nbogus: 1\n"
