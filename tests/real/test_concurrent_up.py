"""Two `sollol up` processes at once on fresh nodes (nothing uploaded yet): one takes each node's lock, the
other waits for it and then finds the node up to date; both succeed and every rpc-server runs, once.
Also: on nodes without systemd, `up` says once that what it started will not survive a reboot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.llama import bin_dir_of, hello
from tests.harness.sshhosts import TestHosts, TestNode
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow]

PORT = 50352


@pytest.fixture(scope="module")
def fresh(
    ssh_nodes: TestHosts, llama_bins, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[TestNode], Path]]:  # type: ignore[no-untyped-def]
    """Three new nodes (empty /root: no binaries yet) and a manifest with an rpc-server on each."""
    tmp = tmp_path_factory.mktemp("concurrent")
    nodes = [ssh_nodes.add_node(f"fresh{i}") for i in (1, 2, 3)]
    manifest = tmp / "cluster.yaml"
    extra = f"llama_cpp:\n  bin_dir: {bin_dir_of(llama_bins, tmp)}\n"
    roles = {n.name: f"rpc: {{port: {PORT}}}" for n in nodes}
    manifest.write_text(ssh_nodes.manifest_yaml(roles, name="race", nodes=nodes, extra=extra))
    yield nodes, manifest
    invoke("down", str(manifest))
    for node in nodes:
        ssh_nodes.stop_node(node)


def test_two_ups_at_once_on_fresh_nodes(fresh: tuple[list[TestNode], Path], ssh_nodes: TestHosts) -> None:
    nodes, manifest = fresh
    assert not any((n.root_dir / ".sollol").exists() for n in nodes)
    command = [sys.executable, "-m", "sollol_cli", "up", str(manifest), "--json"]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, (out, err)
    runs = [{n["node"]: n for n in json.loads(out)["nodes"]} for out, _ in outputs]
    for node in nodes:
        # exactly one run started the node's rpc-server; the other waited for its lock and kept it
        assert sorted(run[node.name]["status"] for run in runs) == ["changed", "unchanged"], runs
        assert all(run[node.name]["failures"] == [] for run in runs)
        assert hello(node.address, PORT) is not None
        ps = ssh_nodes.exec_in(node, "ps -eo stat,comm", check=False).stdout
        assert sum(1 for line in ps.splitlines() if line.split()[1:] == ["rpc-server"] and "Z" not in line) == 1, ps
        # no upload left behind under a temporary name
        assert sorted(p.name for p in (node.root_dir / ".sollol/bin").iterdir()) == ["rpc-server"]


def test_up_without_systemd_says_once_that_services_will_not_survive_a_reboot(
    fresh: tuple[list[TestNode], Path],
) -> None:
    nodes, manifest = fresh
    assert invoke("down", str(manifest), "-q").exit_code == 0
    result = invoke("up", str(manifest))
    assert result.exit_code == 0, result.stderr
    names = ", ".join(n.name for n in nodes)
    assert result.stderr.splitlines()[-2:] == [
        "3 nodes changed",
        f"note: the services started on {names} run without systemd and will not survive a reboot; "
        "run `sollol up` again after one",
    ]
    assert result.stderr.count("reboot") == 1
    again = invoke("up", str(manifest))  # nothing started: nothing to warn about
    assert again.stderr.splitlines()[-1] == "3 nodes unchanged"
    assert "reboot" not in again.stderr
