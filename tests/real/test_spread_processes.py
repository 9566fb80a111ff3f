"""Separate `sollol run` processes started at once spread over equal backends (issue 16).

Each process knows only its own requests, and Ollama does not say how many it is running, so nothing tells
one process where the others went: before, every one of them took the first backend by name. Now each picks
among the equally good backends at random, weighted by free slots.

Three Ollama stand-ins, each its own process with 2 slots and the model loaded, hold every answer after
its first token until the test releases it: all 30 requests are in flight at once before any finishes, so
the stand-ins' `max_in_flight` is exactly what each was given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.ollama import StandinFactory, StandinHandle

pytestmark = pytest.mark.real

PROCESSES = 30
SLOTS = 2


def manifest(tmp_path: Path, standins: list[StandinHandle]) -> Path:
    backends = "".join(
        f"  - {{name: {s.name}, kind: ollama, address: 127.0.0.1, port: {s.port}, slots: {SLOTS}}}\n" for s in standins
    )
    # 30 Python processes on a small machine: a probe or a connect may take a while, and a request that
    # waits in a stand-in's queue gets its first byte only after the test releases the ones before it.
    routing = "routing: {connect_timeout: 60, first_byte_timeout: 300}\n"
    path = tmp_path / "cluster.yaml"
    path.write_text(f"name: spread\nbackends:\n{backends}{routing}")
    return path


def in_flight(standins: list[StandinHandle]) -> int:
    return sum(stats["active"] + stats["queued"] for stats in (s.stats() for s in standins))


def drain(standins: list[StandinHandle], procs: list[subprocess.Popen[bytes]], limit: float = 300) -> None:
    """Release the held answers round by round: each time every running answer waits at its hold, let
    them all go on; the queued ones then take the slots and hold in turn."""
    deadline = time.monotonic() + limit
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, [s.stats() for s in standins]
        for s in standins:
            s.wait_until(lambda stats: stats["held"] == stats["active"], timeout=limit)
        for s in standins:
            s.release()


def test_separate_run_processes_spread_over_equal_backends(ollama_standin: StandinFactory, tmp_path: Path) -> None:
    config = {"num_parallel": SLOTS, "loaded": ["tiny"], "tokens_per_second": 2000, "faults": {"hold_after_tokens": 1}}
    standins = [ollama_standin({"name": f"s{i}", **config}, subprocess=True) for i in (1, 2, 3)]
    path = manifest(tmp_path, standins)
    env = {**os.environ, "SOLLOL_STATE_DIR": str(tmp_path / "state")}
    command = [sys.executable, "-m", "sollol_cli", "run", "tiny", "--num-predict", "4", "-f", str(path)]
    procs = [
        subprocess.Popen(
            [*command[:5], f"question {i}", *command[5:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in range(PROCESSES)
    ]
    try:
        # every request has reached a stand-in (running there or waiting for a slot) before any finishes
        deadline = time.monotonic() + 300
        while in_flight(standins) < PROCESSES and all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, [s.stats() for s in standins]
            time.sleep(0.1)
        drain(standins, procs)
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * PROCESSES, [err.decode() for _, err in outputs]
    answered_by = [stdout.decode().split()[0] for stdout, _ in outputs]
    stats = {s.name: s.stats() for s in standins}
    served = {name: st["completed"] for name, st in stats.items()}
    assert served == {s.name: answered_by.count(f"<{s.name}>") for s in standins}
    assert sum(served.values()) == PROCESSES
    assert all(count > 0 for count in served.values()), served  # every backend serves some
    # None had more at once than its slots plus what the others could not take (beyond all the slots).
    could_not_take = PROCESSES - SLOTS * len(standins)
    at_once = {name: st["max_in_flight"] for name, st in stats.items()}
    assert at_once == served  # all of them were in flight together
    assert all(n <= SLOTS + could_not_take for n in at_once.values()), at_once
