"""Keep-alive of a coordinator left warm by `sollol run`: stopped once idle for `keep_alive`, with no other
sollol command running (a watchdog does it), and counted from the end of the last request."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sollol_cli.sharding.coordinator import alive, all_records
from tests.harness.llama import ServerGroup, rpc_backend_rows
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow]


def manifest(tmp_path: Path, llama_servers: ServerGroup, gguf: Path, keep_alive: float) -> Path:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    backends = rpc_backend_rows(rpcs)
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: keepalive\n"
        f"llama_cpp: {{bin_dir: {llama_servers.bins.llama_server.parent}}}\n"
        f"backends:\n{backends}"
        f"models:\n  - {{name: tiny, mode: shard, gguf: {gguf}, context: 1024, keep_alive: {keep_alive}}}\n"
    )
    return path


def test_idle_coordinator_is_stopped_after_its_keep_alive(
    tmp_path: Path, llama_servers: ServerGroup, tiny_gguf: Path, _isolated_state: Path
) -> None:
    path = manifest(tmp_path, llama_servers, tiny_gguf, keep_alive=3)
    result = invoke("run", "tiny", "hi", "--num-predict", "4", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    finished = time.monotonic()
    (record,) = all_records(_isolated_state / "clusters" / "keepalive")
    time.sleep(1.5)
    assert alive(record), "stopped before its keep-alive ran out"
    home = _isolated_state / "clusters" / "keepalive"
    deadline = finished + 20
    while (alive(record) or all_records(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(record)
    assert time.monotonic() - finished >= 3
    assert all_records(home) == []  # forgotten once stopped: nothing is left for `down`


def test_a_later_request_extends_the_keep_alive(
    tmp_path: Path, llama_servers: ServerGroup, tiny_gguf: Path, _isolated_state: Path
) -> None:
    path = manifest(tmp_path, llama_servers, tiny_gguf, keep_alive=4)
    assert invoke("run", "tiny", "hi", "--num-predict", "4", "-f", str(path)).exit_code == 0
    (record,) = all_records(_isolated_state / "clusters" / "keepalive")
    time.sleep(2.5)
    second = invoke("run", "tiny", "hi", "--num-predict", "4", "-v", "-f", str(path))
    assert f"  reused the running coordinator (pid {record.pid}, port {record.port})" in second.stderr.splitlines()
    time.sleep(2.5)  # 5 s after the first request, 2.5 s after the second
    assert alive(record)
    deadline = time.monotonic() + 20
    while alive(record) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(record)
