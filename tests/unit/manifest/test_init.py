"""`sollol init`: starter manifests from flags and from SynapticLlamas configs (exact output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sollol_cli.manifest.loader import load_manifest, parse_yaml
from sollol_cli.manifest.starter import _scalar
from tests.unit.cli_helpers import invoke

THREE_RPC = [
    {"host": "10.9.66.154", "port": 50052},
    {"host": "10.9.66.48", "port": 50052},
    {"host": "10.9.66.45", "port": 50053},
]


def _config(tmp_path: Path, data: Any, name: str = ".synapticllamas.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _init(tmp_path: Path, *args: str) -> tuple[Any, str]:
    """Run `sollol init ARGS -o tmp/cluster.yaml`; return the loaded manifest and its text."""
    out = tmp_path / "cluster.yaml"
    result = invoke("init", *args, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    return load_manifest(out).cluster, out.read_text()


def _shape(cluster: Any) -> tuple[list[tuple[str, str, int]], list[tuple[str, str]]]:
    return (
        [(b.kind.value, b.address, b.effective_port) for b in cluster.backends],
        [(m.name, m.mode.value) for m in cluster.models],
    )


# The seed's examples and SynapticLlamas' defaults: each old config, and what the manifest must do.
CASES = {
    "sharding only, three rpc backends": (
        {"model": "llama3.1:70b", "task_distribution_enabled": False, "model_sharding_enabled": True,
         "rpc_backends": THREE_RPC},
        ([("rpc", "10.9.66.154", 50052), ("rpc", "10.9.66.48", 50052), ("rpc", "10.9.66.45", 50053)],
         [("llama3.1:70b", "shard")]),
    ),
    "distribution only (rpc backends listed but off)": (
        {"model": "llama3.2", "task_distribution_enabled": True, "model_sharding_enabled": False,
         "rpc_backends": THREE_RPC},
        ([("ollama", "127.0.0.1", 11434)], [("llama3.2", "distribute")]),
    ),
    "both: hybrid": (
        {"model": "codellama:13b", "synthesis_model": "llama3.1:70b", "task_distribution_enabled": True,
         "model_sharding_enabled": True, "rpc_backends": THREE_RPC[:2]},
        ([("ollama", "127.0.0.1", 11434), ("rpc", "10.9.66.154", 50052), ("rpc", "10.9.66.48", 50052)],
         [("codellama:13b", "auto"), ("llama3.1:70b", "auto")]),
    ),
    "an old config: distributed_inference_enabled, defaults for the rest": (
        {"distributed_inference_enabled": True, "rpc_backends": [{"host": "192.168.1.10", "port": 50052}]},
        ([("ollama", "127.0.0.1", 11434), ("rpc", "192.168.1.10", 50052)], [("llama3.2", "auto")]),
    ),
    "everything off: one local Ollama": (
        {"task_distribution_enabled": False, "model_sharding_enabled": False},
        ([("ollama", "127.0.0.1", 11434)], [("llama3.2", "distribute")]),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_synapticllamas_configs_become_manifests_that_do_the_same(tmp_path: Path, case: str) -> None:
    config, expected = CASES[case]
    cluster, _ = _init(tmp_path, "--from", str(_config(tmp_path, config)))
    assert _shape(cluster) == expected


def test_the_manifest_written_for_a_sharding_config(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {"model": "llama3.1:70b", "task_distribution_enabled": False, "model_sharding_enabled": True,
         "rpc_backends": THREE_RPC[:2], "coordinator_url": "http://127.0.0.1:18080", "collaborative_mode": False},
    )  # fmt: skip
    result = invoke("init", "--from", str(config), "-o", "-")
    assert result.exit_code == 0
    assert (
        result.stdout
        == f"""\
# Written by `sollol init --from {config}`.
# Check it with `sollol validate`; `sollol status` shows every backend live; `sollol serve` answers the
# Ollama and OpenAI APIs for all of them. Every key and its default: README, 'Manifest reference'.
name: cluster

# Not carried over from the old config:
#   coordinator_url: sollol starts and supervises its own coordinator

# Backends sollol uses as they are, without SSH. To have sollol install, start and supervise
# llama.cpp and Ollama on your machines instead, describe them under `nodes:` (see
# examples/clusters/homelab.yaml) and run `sollol up`.
backends:
  - kind: rpc
    address: 10.9.66.154
    port: 50052
  - kind: rpc
    address: 10.9.66.48
    port: 50052

models:
  # mode: model sharding was on, task distribution off: always split over the rpc-servers.
  # auto: whole model per node when it fits on one, split by layers over the rpc-servers when not.
  - name: llama3.1:70b
    mode: shard
"""
    )


def test_rpc_servers_of_a_config_with_sharding_off_are_kept_as_comments(tmp_path: Path) -> None:
    config = _config(tmp_path, {"model_sharding_enabled": False, "rpc_backends": THREE_RPC[:1]})
    _, text = _init(tmp_path, "--from", str(config))
    assert (
        "  # rpc-servers the old config listed while model sharding was off; uncomment to shard over them:\n"
        "  # - kind: rpc\n"
        "  #   address: 10.9.66.154\n"
        "  #   port: 50052\n"
    ) in text


def test_the_nodes_file_beside_the_config_brings_the_ollama_nodes(tmp_path: Path) -> None:
    config = _config(tmp_path, {"model": "llama3.2"})
    _config(
        tmp_path,
        {"nodes": [{"url": "http://10.0.0.5:11434", "name": "ollama-10.0.0.5", "priority": 2},
                   {"url": "http://localhost:11435", "name": "second", "priority": 0}]},
        name=".synapticllamas_nodes.json",
    )  # fmt: skip
    out = tmp_path / "cluster.yaml"
    result = invoke("init", "--from", str(config), "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        f"read {config}, {tmp_path / '.synapticllamas_nodes.json'}\n"
        f"wrote {out}: 2 ollama; llama3.2 (distribute)\n"
        f"next: sollol validate {out} && sollol status -f {out}\n"
    )
    cluster = load_manifest(out).cluster
    assert [(b.name, b.address, b.effective_port, b.priority) for b in cluster.backends] == [
        ("ollama-10.0.0.5", "10.0.0.5", 11434, 2),
        ("second", "127.0.0.1", 11435, 0),
    ]


def test_flags_alone_write_a_starter_and_add_to_a_config(tmp_path: Path) -> None:
    cluster, _ = _init(tmp_path, "--rpc", "10.0.0.1", "--rpc", "10.0.0.2:50060", "--ollama", "10.0.0.3", "-m", "big",
                       "--mode", "shard", "--name", "lab")  # fmt: skip
    assert cluster.name == "lab"
    assert _shape(cluster) == (
        [("ollama", "10.0.0.3", 11434), ("rpc", "10.0.0.1", 50052), ("rpc", "10.0.0.2", 50060)],
        [("big", "shard")],
    )
    config = _config(tmp_path, {"model": "small", "model_sharding_enabled": True, "rpc_backends": THREE_RPC[:1]})
    cluster, _ = _init(tmp_path, "--from", str(config), "--rpc", "10.9.66.154:50052", "--rpc", "[fd00::1]:50052",
                       "-m", "huge", "--force")  # fmt: skip
    assert _shape(cluster) == (
        [("ollama", "127.0.0.1", 11434), ("rpc", "10.9.66.154", 50052), ("rpc", "fd00::1", 50052)],
        [("small", "auto"), ("huge", "auto")],
    )


def test_json_output(tmp_path: Path) -> None:
    out = tmp_path / "c.yaml"
    result = invoke("init", "--rpc", "10.0.0.1", "-m", "m", "-o", str(out), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "path": str(out),
        "from": [],
        "backends": [{"kind": "rpc", "address": "10.0.0.1", "port": 50052}],
        "models": [{"name": "m", "mode": "auto"}],
        "notes": [],
    }


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--mode", "fast"], None, "error: --mode 'fast' is not one of auto, distribute, shard\n"),
        (["--mode", "shard", "-m", "big"], None,
         "error: sharding needs rpc-servers, and none are listed; add them with --rpc HOST:PORT "
         "(`sollol discover` finds rpc-servers on a subnet)\n"),
        (["--rpc", "10.0.0.1:99999"], None, "error: --rpc '10.0.0.1:99999': port 99999 is not between 1 and 65535\n"),
        (["--ollama", "a b"], None, "error: --ollama 'a b' is not HOST or HOST:PORT; e.g. 192.168.1.10:50052\n"),
        ([], "[1, 2]", "error: {cfg} is not a SynapticLlamas config (expected a JSON object)\n"),
        ([], '{"model": ', "error: {cfg}:1:11: not valid JSON: Expecting value\n"),
        ([], '{"rpc_backends": [{"port": 1}]}',
         'error: {cfg}: rpc_backends[0] needs a host; e.g. {{"host": "192.168.1.10", "port": 50052}}\n'),
        ([], '{"model_sharding_enabled": true, "task_distribution_enabled": false}',
         "error: {cfg} turns model sharding on but lists no rpc_backends; add them with --rpc HOST:PORT "
         "(`sollol discover` finds rpc-servers on a subnet)\n"),
        ([], '{"model_sharding_enabled": "yes"}', "error: {cfg}: model_sharding_enabled must be true or false, not 'yes'\n"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], config: str | None, message: str) -> None:
    extra = []
    cfg = tmp_path / "old.json"
    if config is not None:
        cfg.write_text(config)
        extra = ["--from", str(cfg)]
    result = invoke("init", *extra, *args, "-o", str(tmp_path / "out.yaml"))
    assert (result.exit_code, result.stderr) == (2, message.format(cfg=cfg))
    assert not (tmp_path / "out.yaml").exists()


def test_sharding_on_without_rpc_backends_says_how_to_find_them(tmp_path: Path) -> None:
    config = _config(tmp_path, {"model_sharding_enabled": True})
    out = tmp_path / "cluster.yaml"
    result = invoke("init", "--from", str(config), "-o", str(out))
    note = (
        "model sharding was on with no rpc_backends listed (SynapticLlamas looked for them at start): "
        "add them with `sollol discover CIDR --write`"
    )
    assert result.exit_code == 0
    assert result.stderr.splitlines()[2] == f"warning: {note}"
    assert f"# NOTE: {note}.\n" in out.read_text()
    assert _shape(load_manifest(out).cluster) == ([("ollama", "127.0.0.1", 11434)], [("llama3.2", "auto")])
    assert "NOTE" not in invoke("init", "--from", str(config), "--rpc", "10.0.0.9", "-o", "-").stdout


def test_an_existing_manifest_is_kept_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    out.write_text("name: mine\n")
    result = invoke("init", "-o", str(out))
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: {out} exists; pass --force to replace it, or -o another file\n",
    )
    assert out.read_text() == "name: mine\n"
    assert invoke("init", "-o", str(out), "--force").exit_code == 0
    assert load_manifest(out).cluster.name == "cluster"


def test_a_missing_config_says_where_synapticllamas_keeps_it(tmp_path: Path) -> None:
    result = invoke("init", "--from", str(tmp_path / "nope.json"))
    assert (result.exit_code, result.stderr) == (
        2, f"error: {tmp_path / 'nope.json'} does not exist; SynapticLlamas keeps it in ~/.synapticllamas.json\n"
    )  # fmt: skip


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30))
def test_names_and_addresses_read_back_as_written(value: str) -> None:
    assert parse_yaml(f"key: {_scalar(value)}\n", "t")["key"] == value
