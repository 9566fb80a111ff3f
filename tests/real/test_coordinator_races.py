"""Several sollol processes and one sharded model, on real rpc-servers and a real llama-server coordinator
(issue 19, items 2 and 3).

- Three `sollol run` started at once with no coordinator yet: one loads it, the others wait for it to be ready
  and use it. Before, the losers were routed to it while it loaded (HTTP 503 "Loading model"), found its
  rpc-servers busy, or stopped it; once two coordinators ran on the same rpc-servers.
- A coordinator record that no longer parses is set aside with a warning, and the coordinator it described is
  still found and stopped: by the next `run` (which then starts a fresh one) and by `down`. Before, it was
  skipped silently and the coordinator kept the rpc-servers until found by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home, stop_all
from tests.harness.llama import ServerGroup, rpc_backend_rows
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real

CLUSTER = "races"


@pytest.fixture
def manifest(tmp_path: Path, llama_servers: ServerGroup, tiny_gguf: Path) -> Iterator[Path]:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    backends = rpc_backend_rows(rpcs)
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: {CLUSTER}\n"
        f"llama_cpp: {{bin_dir: {llama_servers.bins.llama_server.parent}}}\n"
        f"backends:\n{backends}"
        f"models:\n  - {{name: tiny, mode: shard, gguf: {tiny_gguf}, context: 1024, keep_alive: 120}}\n"
    )
    try:
        yield path
    finally:
        stop_all(Settings(), CLUSTER)


def home() -> Path:
    return coordinator_home(Settings(), CLUSTER)


def coordinators_running() -> list[int]:
    """pids of the coordinators this cluster's commands started on this machine (found by their marker,
    whatever the records say)."""
    return sorted(record.pid for record in coord.marked_processes(home()))


def sollol_run(manifest: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "sollol_cli", "run", "tiny", "hi", "--num-predict", "4", "-v", "-f", str(manifest)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def test_processes_that_need_the_same_coordinator_at_once_share_the_one_loaded(manifest: Path) -> None:
    runs = [sollol_run(manifest) for _ in range(3)]  # started together; nothing is loaded yet
    results = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    for code, _, stderr in results:
        assert code == 0, stderr
    (record,) = coord.all_records(home())
    assert coordinators_running() == [record.pid]  # never a second one on the same rpc-servers
    said = [stderr for _, _, stderr in results]
    started = [s for s in said if f"started a coordinator (pid {record.pid})" in s]
    reused = [s for s in said if f"reused the running coordinator (pid {record.pid}, port {record.port})" in s]
    assert (len(started), len(reused)) == (1, 2), said


def test_a_corrupt_record_is_set_aside_and_its_coordinator_still_stopped(manifest: Path) -> None:
    first = invoke("run", "tiny", "hi", "--num-predict", "4", "-f", str(manifest))
    assert first.exit_code == 0, first.stderr
    (old,) = coord.all_records(home())
    path = coord.record_path(home(), "tiny")
    path.write_text(path.read_text()[:40])  # cut off, as by a full disk or a crash mid-write

    second = invoke("run", "tiny", "hi", "--num-predict", "4", "-v", "-f", str(manifest))
    assert second.exit_code == 0, second.stderr
    assert "coordinator record tiny.json: unreadable" in second.stderr
    assert f"found running without a record (pid {old.pid}, port {old.port}" in second.stderr
    assert f"  stopped a coordinator nobody was serving from (pid {old.pid}: " in second.stderr
    (new,) = coord.all_records(home())
    assert new.pid != old.pid and not coord.alive(old)  # the orphan was stopped, a fresh one serves
    assert coordinators_running() == [new.pid]
    assert len(list(path.parent.glob("tiny.json.corrupt-*"))) == 1

    path.write_text("{not json")
    down = invoke("down", str(manifest))
    assert down.exit_code == 0, down.stderr
    assert "coordinator record tiny.json: unreadable" in down.stderr
    assert coordinators_running() == []  # nothing left behind
    assert not coord.alive(new)
    assert coord.all_records(home()) == []
