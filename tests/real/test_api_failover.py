"""The Python API routes around a backend killed in the middle of a run (issue 14): requests in flight on it,
which it never answered, are answered by the other backend; none is lost and none fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sollol_cli import AsyncCluster
from tests.harness.ollama import StandinFactory, SubprocessStandin

pytestmark = pytest.mark.real

MESSAGES = [{"role": "user", "content": "are you there?"}]


def test_a_backend_killed_mid_run_is_routed_around(ollama_standin: StandinFactory, tmp_path: Path) -> None:
    doomed = ollama_standin({"name": "doomed"}, subprocess=True)
    assert isinstance(doomed, SubprocessStandin)
    steady = ollama_standin({"name": "steady"})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: failover\nbackends:\n"
        # doomed is preferred, so the run's first requests are all on it when it dies
        f"  - {{name: doomed, kind: ollama, address: 127.0.0.1, port: {doomed.port}, priority: 1, slots: 4}}\n"
        f"  - {{name: steady, kind: ollama, address: 127.0.0.1, port: {steady.port}, slots: 4}}\n"
    )
    doomed.set_faults(hang=True, routes=["/api/chat"])  # it takes the requests and never answers

    async def scenario() -> list[tuple[str | None, list[str]]]:
        async with AsyncCluster(path) as cluster:
            asks = [asyncio.create_task(cluster.chat("tiny", MESSAGES, options={"num_predict": 3})) for _ in range(4)]
            await asyncio.to_thread(doomed.wait_until, lambda s: s["requests"].get("POST /api/chat", 0) == 4)
            doomed.process.kill()  # mid-run: four requests in flight on it
            answers = await asyncio.gather(*asks)
            later = await cluster.chat("tiny", MESSAGES, options={"num_predict": 3})  # the run goes on
            answers.append(later)
        return [(a.sollol.backend, a.sollol.attempts) if a.sollol else (None, []) for a in answers]

    served = asyncio.run(scenario())
    assert [backend for backend, _ in served] == ["steady"] * 5
    for _, attempts in served[:4]:
        assert len(attempts) == 1 and attempts[0].startswith(f"doomed (127.0.0.1:{doomed.port}): "), attempts
    assert steady.stats()["requests"]["POST /api/chat"] == 5
