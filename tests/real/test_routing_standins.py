"""Routing when Ollama backends really die: a stand-in process killed with SIGKILL mid-answer or before its
first byte, and one that comes back on the same port.

The spread of 60 concurrent requests by speed and slots is in test_routing.py. It runs through one
one runtime (`open_cluster`) in one process, as `sollol serve` does: separate `sollol run` processes each count slots for
themselves, so they could not keep a backend within its slots between them. The tests here use faults no
stand-in can inject into itself: its process is gone, so the kernel resets the connection or refuses it.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sollol_cli.manifest.loader import load_manifest
from sollol_cli.runtime.dispatch import Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinHandle, SubprocessStandin
from tests.standin.ollama_standin import StandinConfig, StandinServer

pytestmark = pytest.mark.real


def manifest(tmp_path: Path, preferred: StandinHandle, fallback: StandinHandle, extra: str = "") -> Path:
    """`preferred` has the higher priority, so the router tries it first whenever it is healthy."""
    path = tmp_path / "cluster.yaml"
    rows = [(preferred, 1), (fallback, 0)]
    backends = "".join(
        f"  - {{name: {h.name}, kind: ollama, address: 127.0.0.1, port: {h.port}, priority: {p}}}\n" for h, p in rows
    )
    path.write_text(f"name: dying\nbackends:\n{backends}{extra}")
    return path


def start_run(*args: str) -> subprocess.Popen[bytes]:
    """`sollol run` as its own process, so the test can act while tokens stream."""
    return subprocess.Popen(
        [sys.executable, "-m", "sollol_cli", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def read_until(proc: subprocess.Popen[bytes], enough: Callable[[str], bool], timeout: float = 15.0) -> str:
    """stdout up to the moment it is `enough`."""
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while not enough(seen.decode(errors="replace")):
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            proc.kill()
            raise TimeoutError(f"stdout never was enough: {seen!r}")
        piece = os.read(proc.stdout.fileno(), 4096)
        if not piece:
            raise AssertionError(f"stdout closed early: {seen!r}; stderr: {proc.stderr.read()!r}")
        seen += piece
    return seen.decode()


def kill(handle: StandinHandle) -> None:
    assert isinstance(handle, SubprocessStandin)
    handle.process.kill()  # SIGKILL: no goodbye, the kernel closes its sockets
    handle.process.wait(timeout=10)


def test_backend_killed_mid_stream_ends_run_with_an_error(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    victim = ollama_standin({"name": "victim", "tokens_per_second": 20.0}, subprocess=True)
    bystander = ollama_standin({"name": "bystander"})
    path = manifest(tmp_path, victim, bystander)
    proc = start_run("tiny", "tell me everything", "--num-predict", "40", "-f", str(path))  # 2 s at 20 tokens/s
    try:
        partial = read_until(proc, lambda out: len(out.split()) >= 3)  # "<victim> word word"
        kill(victim)
        rest, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    stdout = partial + rest.decode()
    assert proc.returncode == 1, stderr
    words = stdout.split()
    assert words[0] == "<victim>" and 3 <= len(words) < 40, stdout  # what arrived is kept, and it is not all
    assert stdout.endswith("\n")  # the error starts on a line of its own
    lines = stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: victim (127.0.0.1:{victim.port}): "), lines
    # after the first token nothing is retried: a second answer would be glued onto the first one
    assert "POST /api/generate" not in bystander.stats()["requests"]


def test_backend_killed_before_answering_is_retried_elsewhere(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doomed = ollama_standin(
        {"name": "doomed", "faults": {"slow_start": 30.0, "routes": ["/api/generate"]}}, subprocess=True
    )
    rescuer = ollama_standin({"name": "rescuer"})
    path = manifest(tmp_path, doomed, rescuer)
    proc = start_run("tiny", "hello", "--num-predict", "4", "-v", "-f", str(path))
    try:
        doomed.wait_until(lambda stats: stats["requests"].get("POST /api/generate") == 1, timeout=15)
        kill(doomed)  # it has the request and has sent nothing back
        stdout, stderr = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert stdout.decode().startswith("<rescuer>") and len(stdout.split()) == 4
    lines = stderr.decode().splitlines()
    assert lines[0].startswith("rescuer · distribute · first token"), lines
    assert lines[2].startswith(f"  retried after: doomed (127.0.0.1:{doomed.port}): "), lines


async def until(condition: Callable[[], bool], limit: float = 30) -> None:
    """Wait until `condition` holds (looked at every 10 ms); fails only if it never does within `limit` s."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > limit:
            pytest.fail("the expected state never came")
        await asyncio.sleep(0.01)


def test_restarted_backend_is_picked_again_at_its_first_probe(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Killed, taken out by the running monitor, restarted on the same port, preferred again. Counted in
    probes, not seconds: the first probe that reaches the restarted instance lets it back in. It runs in this
    process, so it counts every request it gets from the instant it listens."""
    interval = 0.25
    phoenix = ollama_standin({"name": "phoenix"}, subprocess=True)
    steady = ollama_standin({"name": "steady"})
    path = manifest(tmp_path, phoenix, steady, extra=f"routing: {{probe_interval: {interval}}}\n")
    cluster = load_manifest(path).cluster

    async def scenario() -> int:
        async with open_cluster(cluster, Settings()) as runtime:

            async def ask() -> Trace:
                trace = Trace("tiny")
                body = generate_request("tiny", "are you there?", PromptOptions(num_predict=2))
                await answer(runtime.dispatcher, "generate", body, trace, lambda _: None)
                return trace

            view = runtime.monitor.view("phoenix")
            monitor = asyncio.create_task(runtime.monitor.run())
            restarted = StandinServer(StandinConfig(name="phoenix"))
            try:
                assert (await ask()).backend == "phoenix"
                kill(phoenix)
                # its last probe was fine, so the next request still tries it: refused, answered by steady
                trace = await ask()
                assert trace.backend == "steady" and trace.attempts[0].startswith(
                    f"phoenix (127.0.0.1:{phoenix.port}): "
                ), trace
                await until(lambda: not view.probe.healthy)
                trace = await ask()  # taken out: not even tried
                assert trace.backend == "steady" and trace.attempts == [], trace

                await restarted.start("127.0.0.1", phoenix.port)
                await until(lambda: view.probe.healthy)
                probes = restarted.state.stats.requests.get("GET /api/version", 0)
                assert (await ask()).backend == "phoenix"
                return probes
            finally:
                monitor.cancel()
                await restarted.stop()

    probes = asyncio.run(scenario())
    # back in after the first probe that found it answering (a second may be under way as we look)
    assert 1 <= probes <= 2, f"picked again only after {probes} probes"
