"""A running coordinator whose rpc backends the manifest no longer has (edited, or the servers moved to other
ports) is not reused: its layers sit on servers that are not the cluster's. The next request replaces it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home, stop_all
from tests.harness.llama import ServerGroup, ServerProcess, rpc_backend_rows
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real
GREEDY = ("--temperature", "0", "--seed", "7", "--num-predict", "8")


def write_manifest(path: Path, bin_dir: Path, gguf: Path, rpcs: list[ServerProcess]) -> Path:
    rows = rpc_backend_rows(rpcs)
    path.write_text(
        "name: outdated\n"
        f"llama_cpp: {{bin_dir: {bin_dir}}}\n"
        f"backends:\n{rows}"
        f"models:\n  - {{name: tiny, mode: shard, gguf: {gguf}, context: 1024}}\n"
    )
    return path


def test_a_coordinator_on_rpc_backends_the_manifest_no_longer_has_is_replaced(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    bin_dir = llama_servers.bins.llama_server.parent
    before = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    path = write_manifest(tmp_path / "cluster.yaml", bin_dir, tiny_gguf, before)
    home = coordinator_home(Settings(), "outdated")
    try:
        first = invoke("run", "tiny", "hi", *GREEDY, "-v", "-f", str(path))
        assert first.exit_code == 0, first.stderr
        old = coord.load_record(home, "tiny")
        assert old is not None and old.rpc == [r.endpoint for r in before]

        after = [llama_servers.rpc_server(), llama_servers.rpc_server()]
        write_manifest(path, bin_dir, tiny_gguf, after)  # the same model, other rpc-servers
        second = invoke("run", "tiny", "hi", *GREEDY, "-v", "-f", str(path))
        assert second.exit_code == 0, second.stderr
        gone = ", ".join(r.endpoint for r in before)
        assert f"replaced the coordinator: the manifest no longer has its rpc backends {gone}" in second.stderr
        assert "reused the running coordinator" not in second.stderr
        assert second.stdout == first.stdout  # greedy: the same text from the new placement
        new = coord.load_record(home, "tiny")
        assert new is not None and new.rpc == [r.endpoint for r in after] and new.pid != old.pid
        assert not coord.alive(old)
    finally:
        stop_all(Settings(), "outdated")
