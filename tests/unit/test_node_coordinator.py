"""The shell text that starts and stops a coordinator on a node, run here with a stand-in llama-server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from sollol_cli.sharding.coordinator import CoordinatorPlan, CoordinatorRecord
from sollol_cli.sharding.node_coordinator import NodeLaunch, start_script, stop_script
from sollol_cli.ssh.nodeproc import SHELL_FUNCTIONS, coordinator_name

PLAN = CoordinatorPlan(
    "Big:13b", "$HOME/.sollol/models/sha256-ab.gguf", ("10.0.0.2:50052",), 2048, 2, (1.0,), "10.0.0.1"
)


def test_service_name_is_a_file_name() -> None:
    assert coordinator_name("lab", "org/Big:13b") == "sollol-lab-coordinator-org_Big_13b"


def test_fixed_port_script_text() -> None:
    script = start_script(NodeLaunch("lab", "n1", PLAN, "$HOME/.sollol/bin/llama-server", 41234))
    assert script.startswith(f'set -e; port=41234; {SHELL_FUNCTIONS}mkdir -p "$HOME"/.sollol/lab/n1/run ')
    assert (
        '"$HOME"/.sollol/bin/llama-server -m "$HOME"/.sollol/models/sha256-ab.gguf --rpc 10.0.0.2:50052 -ngl 999 '
        '--host 10.0.0.1 --port "$port" -c 2048 -np 2 --metrics --alias Big:13b -lv 4 -ts 1 '
        '--api-key-file "$HOME"/.sollol/lab/n1/run/sollol-lab-coordinator-Big_13b.key' in script
    )
    assert f'echo "$pid $start {PLAN.digest} coordinator 10.0.0.1 $port"' in script


def test_embeddings_flags_end_the_command_line() -> None:
    plan = dataclasses.replace(PLAN, embeddings=("--embeddings", "--pooling", "last"))
    script = start_script(NodeLaunch("lab", "n1", plan, "$HOME/.sollol/bin/llama-server", 41234))
    assert "--alias Big:13b -lv 4 -ts 1 --embeddings --pooling last --api-key-file " in script
    assert plan.digest != PLAN.digest


def test_a_plan_without_embeddings_keeps_its_digest() -> None:
    """Coordinators started before the setting existed are reused, not restarted (the digest decides)."""
    fields = dataclasses.asdict(PLAN)
    del fields["embeddings"]
    assert PLAN.digest == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@pytest.fixture
def fake_home(tmp_path: Path) -> dict[str, str]:
    """A node's shell: HOME in a temp dir, and a llama-server stand-in that sleeps."""
    binary = tmp_path / ".sollol" / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text('#!/bin/sh\necho "args: $*"\nexec sleep 30\n')
    binary.chmod(0o755)
    return {**os.environ, "HOME": str(tmp_path)}


def run(script: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], input=stdin, env=env, capture_output=True, text=True, timeout=30)


def test_start_and_stop_scripts_on_this_machine(fake_home: dict[str, str]) -> None:
    home = Path(fake_home["HOME"])
    launch = NodeLaunch("lab", "n1", PLAN, "$HOME/.sollol/bin/llama-server", None, first_port=41999)
    started = run(start_script(launch), fake_home, stdin="secret-key\n")
    assert started.returncode == 0, started.stderr
    pid, start, port = (int(x) for x in started.stdout.split())
    assert 41100 <= port <= 41999
    run_dir = home / ".sollol/lab/n1/run"
    key = run_dir / "sollol-lab-coordinator-Big_13b.key"
    assert key.read_text() == "secret-key\n" and key.stat().st_mode & 0o777 == 0o600
    assert (run_dir / "sollol-lab-coordinator-Big_13b.pid").read_text().split() == [
        str(pid),
        str(start),
        PLAN.digest,
        "coordinator",
        "10.0.0.1",
        str(port),
    ]
    log = home / ".sollol/lab/n1/log/sollol-lab-coordinator-Big_13b.log"
    deadline = time.monotonic() + 5
    while "args:" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"--port {port} " in log.read_text() and "secret-key" not in log.read_text()
    record = CoordinatorRecord("Big:13b", PLAN.digest, pid, start, "10.0.0.1", port, str(log), [], 0, 0, 1, node="n1")
    stopped = run(stop_script("lab", "n1", record), fake_home)
    assert stopped.stdout.strip() == "stopped"
    assert not key.exists() and not (run_dir / "sollol-lab-coordinator-Big_13b.pid").exists()
    assert run(stop_script("lab", "n1", record), fake_home).stdout.strip() == "gone"


def test_free_port_search_skips_a_listening_port(fake_home: dict[str, str]) -> None:
    import socket

    with socket.socket() as busy:
        for taken in range(41500, 41998):
            try:
                with socket.socket() as probe:  # the next port must be free for the search to land there
                    probe.bind(("127.0.0.1", taken + 1))
                busy.bind(("127.0.0.1", taken))
                break
            except OSError:
                continue
        busy.listen()
        launch = NodeLaunch("lab", "n1", PLAN, "$HOME/.sollol/bin/llama-server", None, first_port=taken)
        started = run(start_script(launch), fake_home, stdin="k\n")
    pid, start, port = (int(x) for x in started.stdout.split())
    record = CoordinatorRecord("Big:13b", PLAN.digest, pid, start, "10.0.0.1", port, "", [], 0, 0, 1, node="n1")
    run(stop_script("lab", "n1", record), fake_home)
    assert port == taken + 1
