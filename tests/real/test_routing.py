"""The router end to end against Ollama stand-ins: spread by speed and slots, slot limits kept, failures
before and after the first byte, and a backend that comes back."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from sollol_cli.errors import SollolError
from sollol_cli.manifest.loader import load_manifest
from sollol_cli.runtime.dispatch import Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import free_port, write_standin_script
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real


def manifest(
    tmp_path: Path, standins: list, *, slots: list[int], extra: str = "", priority: list[int] | None = None
) -> Path:  # type: ignore[type-arg]
    path = tmp_path / "cluster.yaml"
    lines = ["name: standins", "backends:"]
    for i, (handle, n) in enumerate(zip(standins, slots, strict=True)):
        tier = priority[i] if priority else 0
        lines.append(
            f"  - {{name: {handle.name}, kind: ollama, address: 127.0.0.1, port: {handle.port}, slots: {n}, priority: {tier}}}"
        )
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_60_concurrent_requests_spread_by_speed_and_slots(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One runtime, as `sollol serve` runs it: separate `sollol run` processes could not share slot
    accounting, so concurrency is tested where it is enforced, in one process."""
    specs = [("slow", 1, 40.0), ("mid", 2, 80.0), ("fast", 4, 160.0)]
    standins = [
        ollama_standin({"name": name, "num_parallel": slots, "tokens_per_second": tps, "loaded": ["tiny:latest"]})
        for name, slots, tps in specs
    ]
    path = manifest(tmp_path, standins, slots=[s for _, s, _ in specs], extra="routing: {queue_length: 100}\n")
    cluster = load_manifest(path).cluster
    options = PromptOptions(num_predict=12)

    async def run_all() -> list[tuple[str, str]]:
        async with open_cluster(cluster, Settings()) as runtime:

            async def one(i: int) -> tuple[str, str]:
                trace = Trace("tiny")
                pieces: list[str] = []
                body = generate_request("tiny", f"question {i}", options)
                final = await answer(runtime.dispatcher, "generate", body, trace, pieces.append)
                assert final["done"] and final["eval_count"] == 12
                return trace.backend or "", "".join(pieces)

            return await asyncio.gather(*(one(i) for i in range(60)))

    results = asyncio.run(run_all())
    assert len(results) == 60
    for backend, text in results:
        assert text.startswith(f"<{backend}>"), "each answer comes whole from the instance that served it"
    share = Counter(backend for backend, _ in results)
    assert share["fast"] > share["mid"] > share["slow"] > 0, share
    for handle, (_, slots, _) in zip(standins, specs, strict=True):
        assert handle.stats()["max_concurrency"] <= slots


def test_backend_dropping_mid_stream_ends_run_with_an_error(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    only = ollama_standin({"name": "dropper", "tokens_per_second": 200.0})
    only.set_faults(drop_after_tokens=3)
    path = manifest(tmp_path, [only], slots=[1])
    result = invoke("run", "tiny", "hello", "--num-predict", "10", "-f", str(path))
    assert result.exit_code == 1
    assert len(result.stdout.split()) == 3, result.stdout  # the tokens that arrived are kept
    assert result.stderr.startswith("error: dropper (127.0.0.1:")
    assert "Traceback" not in result.stderr


def test_error_line_mid_stream_is_reported(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    only = ollama_standin({"name": "erring"})
    only.set_faults(error_after_tokens=2, message="out of memory")
    path = manifest(tmp_path, [only], slots=[1])
    result = invoke("run", "tiny", "hello", "--num-predict", "10", "-f", str(path))
    assert result.exit_code == 1
    assert "out of memory" in result.stderr


def test_backend_failing_before_the_first_byte_is_retried_elsewhere(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broken = ollama_standin({"name": "broken", "loaded": ["tiny:latest"]})
    healthy = ollama_standin({"name": "healthy"})
    broken.set_faults(http_500_next=5, routes=["/api/generate"])  # probes still see it healthy
    path = manifest(tmp_path, [broken, healthy], slots=[1, 1], priority=[1, 0])  # broken is tried first
    result = invoke("run", "tiny", "hello", "--num-predict", "4", "-v", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<healthy>")
    lines = result.stderr.splitlines()
    assert lines[0].startswith("healthy · distribute · first token")
    assert lines[1] == "  decision: distribute: the cluster has no rpc backends to shard over"
    assert lines[2].startswith(f"  retried after: broken (127.0.0.1:{broken.port}): HTTP 500")


def _serve(script: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"}
    with log.open("ab") as out:
        proc = subprocess.Popen([str(script), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise TimeoutError(log.read_text())


def test_restarted_backend_is_used_again(tmp_path: Path) -> None:
    script = write_standin_script(tmp_path)
    port = free_port()
    proc = _serve(script, port, tmp_path / "standin.log")
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: phoenix\nbackends:\n  - {{name: phoenix, kind: ollama, address: 127.0.0.1, port: {port}}}\n"
        "routing: {probe_interval: 0.2}\n"
    )
    cluster = load_manifest(path).cluster
    options = PromptOptions(num_predict=3)

    async def scenario() -> tuple[bool, int, str]:
        async with open_cluster(cluster, Settings()) as runtime:
            monitor = asyncio.create_task(runtime.monitor.run())
            try:
                proc.kill()
                proc.wait()
                failed = False
                try:
                    await answer(
                        runtime.dispatcher,
                        "generate",
                        generate_request("tiny", "x", options),
                        Trace("tiny"),
                        lambda _: None,
                    )
                except SollolError:
                    failed = True
                view = runtime.monitor.view("phoenix")

                async def until(check: Callable[[], bool]) -> None:
                    async with asyncio.timeout(30):  # a safety net, not a measurement
                        while not check():
                            await runtime.monitor.changed.wait()  # set after every probe round

                # the monitor has seen it down (the failed request alone need not say so) ...
                await until(lambda: not view.probe.healthy)
                restarted = await asyncio.to_thread(_serve, script, port, tmp_path / "standin2.log")
                # ... and then back up: count how many probes the new process answered until then
                await until(lambda: view.probe.healthy)
                stats_url = f"http://127.0.0.1:{port}/_standin/stats"
                stats = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(stats_url).read()))
                probes = int(stats["requests"].get("GET /api/version", 0))  # how many it took to let it back in
                pieces: list[str] = []
                await answer(
                    runtime.dispatcher, "generate", generate_request("tiny", "x", options), Trace("tiny"), pieces.append
                )
                restarted.kill()
                restarted.wait()
                return failed, probes, "".join(pieces)
            finally:
                monitor.cancel()

    failed, probes, text = asyncio.run(scenario())
    assert failed, "a request while the only backend is down must fail"
    # back in after the first probe that found it answering (a second may be under way as we look)
    assert 1 <= probes <= 2, f"re-admitted only after {probes} probes"
    assert text.strip()
