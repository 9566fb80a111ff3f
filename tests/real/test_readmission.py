"""A backend that comes back is re-admitted by the probe that sees it, not by the breaker's cooldown
(issue: with probe_interval 1 a restarted node got its first request 19.5 s after it answered probes).

The monitor loop is driven by hand (`probe_all`), so the test is ordered by events, not by time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sollol_cli.errors import BackendError
from sollol_cli.health import BreakerPhase
from sollol_cli.manifest.loader import load_manifest
from sollol_cli.runtime.dispatch import Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinFactory, SubprocessStandin
from tests.standin.ollama_standin import StandinConfig, StandinServer

pytestmark = pytest.mark.real


def test_a_restarted_backend_is_readmitted_by_the_probe_that_sees_it(
    ollama_standin: StandinFactory, tmp_path: Path
) -> None:
    phoenix = ollama_standin({"name": "phoenix"}, subprocess=True)
    assert isinstance(phoenix, SubprocessStandin)
    path = tmp_path / "cluster.yaml"
    # the default cooldown (30 s) is far longer than this test: only the probe can let requests through
    path.write_text(
        f"name: back\nbackends:\n  - {{name: phoenix, kind: ollama, address: 127.0.0.1, port: {phoenix.port}}}\n"
    )
    cluster = load_manifest(path).cluster

    async def scenario() -> None:
        async with open_cluster(cluster, Settings()) as runtime:
            monitor = runtime.monitor
            view = monitor.view("phoenix")

            async def ask() -> Trace:
                trace = Trace("tiny")
                body = generate_request("tiny", "are you there?", PromptOptions(num_predict=2))
                await answer(runtime.dispatcher, "generate", body, trace, lambda _: None)
                return trace

            assert (await ask()).backend == "phoenix"
            phoenix.process.kill()
            phoenix.process.wait(timeout=10)
            for _ in range(3):  # three refused requests in a row open its breaker
                with pytest.raises(BackendError):
                    await ask()
            assert monitor.breaker.phase(view.breaker, monitor.clock()) is BreakerPhase.open
            await monitor.probe_all()  # the probe fails too: the node is down
            assert view.probe.consecutive_failures == 1

            restarted = StandinServer(StandinConfig(name="phoenix"))
            await restarted.start("127.0.0.1", phoenix.port)
            try:
                with pytest.raises(BackendError, match="none is healthy|no backend"):
                    await ask()  # nothing has seen it back yet
                await monitor.probe_all()  # this probe sees it back
                assert monitor.breaker.phase(view.breaker, monitor.clock()) is BreakerPhase.half_open
                trace = await ask()  # the trial request, long before the cooldown is over
                assert (trace.backend, trace.attempts) == ("phoenix", [])
                assert monitor.breaker.phase(view.breaker, monitor.clock()) is BreakerPhase.closed
            finally:
                await restarted.stop()

    asyncio.run(scenario())


def test_a_backend_that_answers_probes_but_fails_requests_keeps_its_cooldown(
    ollama_standin: StandinFactory, tmp_path: Path
) -> None:
    sick = ollama_standin({"name": "sick"})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: sick\nbackends:\n  - {{name: sick, kind: ollama, address: 127.0.0.1, port: {sick.port}}}\n"
        "routing: {breaker_cooldown: 120}\n"
    )
    cluster = load_manifest(path).cluster

    async def scenario() -> None:
        async with open_cluster(cluster, Settings()) as runtime:
            monitor = runtime.monitor
            view = monitor.view("sick")
            assert monitor.breaker.cooldown_s == 120
            sick.set_faults(http_500_next=3, routes=["/api/generate"])
            for _ in range(3):
                with pytest.raises(BackendError):
                    trace = Trace("tiny")
                    body = generate_request("tiny", "hello", PromptOptions(num_predict=2))
                    await answer(runtime.dispatcher, "generate", body, trace, lambda _: None)
            assert monitor.breaker.phase(view.breaker, monitor.clock()) is BreakerPhase.open
            await monitor.probe_all()  # /api/version and /api/tags answer: it never went away
            assert monitor.breaker.phase(view.breaker, monitor.clock()) is BreakerPhase.open

    asyncio.run(scenario())
