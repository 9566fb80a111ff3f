"""A backend that accepts a request and never answers is given up after the first-byte timeout and the request
is answered elsewhere, instead of waiting out `read_timeout` (300 s by default). The limit is the warm one when
the backend has the model loaded, the loading one when not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sollol_cli.manifest.loader import load_manifest
from sollol_cli.runtime.dispatch import Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
from sollol_cli.runtime.session import ClusterRuntime, open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinFactory

pytestmark = pytest.mark.real


@pytest.mark.parametrize(("warm", "limit"), [(True, "0.5s"), (False, "2s")])
def test_a_hung_backend_is_retried_elsewhere_after_the_first_byte_timeout(
    ollama_standin: StandinFactory, tmp_path: Path, warm: bool, limit: str
) -> None:
    hung = ollama_standin({"name": "hung"})
    steady = ollama_standin({"name": "steady"})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: hung\nbackends:\n"
        f"  - {{name: hung, kind: ollama, address: 127.0.0.1, port: {hung.port}, priority: 1}}\n"
        f"  - {{name: steady, kind: ollama, address: 127.0.0.1, port: {steady.port}}}\n"
        # read_timeout stays long: only the first-byte limit can end the wait within the test's patience
        "routing: {first_byte_timeout: 0.5, load_timeout: 2, read_timeout: 300}\n"
    )
    cluster = load_manifest(path).cluster

    async def ask(runtime: ClusterRuntime) -> Trace:
        trace = Trace("tiny")
        body = generate_request("tiny", "are you there?", PromptOptions(num_predict=2))
        await answer(runtime.dispatcher, "generate", body, trace, lambda _: None)
        return trace

    async def scenario() -> Trace:
        async with open_cluster(cluster, Settings()) as runtime:
            if warm:
                assert (await ask(runtime)).backend == "hung"  # loads the model there
                await runtime.monitor.probe_all()
                assert runtime.monitor.view("hung").loaded
            else:
                assert not runtime.monitor.view("hung").loaded
            hung.set_faults(hang=True, routes=["/api/generate"])
            # a safety net for the old behaviour (which waited 300 s), not a measurement
            return await asyncio.wait_for(ask(runtime), timeout=60)

    trace = asyncio.run(scenario())
    assert trace.backend == "steady"
    assert len(trace.attempts) == 1
    assert trace.attempts[0].endswith(f"sent nothing within {limit} (first-byte timeout)"), trace.attempts
    hung.clear_faults()
