"""Embeddings from llama.cpp through `sollol serve`: a `llamacpp` node that `sollol up` starts with
`embeddings: true`, and a sharded model's coordinator. Every vector must be the one llama-server itself
gives with the same flags (`--embeddings --pooling last`, the manifest's default pooling)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from sollol_cli.manifest.loader import load_manifest
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from tests.harness._gateway import serving
from tests.harness.llama import ServerGroup, ServerProcess, free_port
from tests.unit.cli_helpers import invoke

pytestmark = pytest.mark.real

INPUTS = ["the sea", "a mountain of text that is a little longer than the first one"]
GREEDY = {"temperature": 0, "top_k": 1, "seed": 1, "num_predict": 12}
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]
REL, ABS = 1e-4, 1e-5  # same build, same model, same flags: float noise at most


def direct_vectors(server: ServerProcess, inputs: list[str]) -> list[list[float]]:
    """llama-server's own answer on /v1/embeddings."""
    body = json.dumps({"input": inputs, "encoding_format": "float"}).encode()
    request = urllib.request.Request(
        server.url + "/v1/embeddings", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        data = json.load(response)
    return [item["embedding"] for item in sorted(data["data"], key=lambda d: d["index"])]


def assert_same_vectors(got: Any, expected: list[list[float]]) -> None:
    got = [list(v) for v in got]
    assert [len(v) for v in got] == [len(v) for v in expected] == [256] * len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine == pytest.approx(theirs, rel=REL, abs=ABS)
    assert got[0] != pytest.approx(got[-1], rel=REL, abs=ABS) or len(got) == 1


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llama_bins: Any, tiny_gguf: Path) -> Path:
    """A private $HOME for the local nodes' ~/.sollol, keeping the machine's llama.cpp and model cache."""
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(Settings().cache_dir))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def reference(llama_servers: ServerGroup, tiny_gguf: Path) -> ServerProcess:
    """llama-server started by hand with the flags the manifest's defaults stand for."""
    return llama_servers.llama_server(tiny_gguf, context=1024, extra=["--embeddings", "--pooling", "last"])


async def test_a_provisioned_llamacpp_node_serves_embeddings(
    home: Path, tiny_gguf: Path, reference: ServerProcess, tmp_path: Path
) -> None:
    on, off = free_port(), free_port()
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: emb\nnodes:\n"
        f"  - name: emb\n    address: local\n    llamacpp: {{port: {on}, model: {tiny_gguf}, alias: tiny,"
        " context: 1024, embeddings: true}\n"
        f"  - name: plain\n    address: local\n    llamacpp: {{port: {off}, model: {tiny_gguf}, alias: plain,"
        " context: 1024}\n"
    )
    up = await asyncio.to_thread(invoke, "up", str(path), "-q")  # the CLI runs its own event loop
    assert up.exit_code == 0, up.stderr
    try:
        expected = direct_vectors(reference, INPUTS)
        async with serving(load_manifest(path).cluster, Settings()) as url:
            client = ollama.AsyncClient(host=url)
            assert_same_vectors((await client.embed(model="tiny", input=INPUTS)).embeddings, expected)
            legacy = await client.embeddings(model="tiny", prompt=INPUTS[0])
            assert_same_vectors([legacy.embedding], expected[:1])
            oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused")
            answer = await oai.embeddings.create(model="tiny", input=INPUTS)
            assert_same_vectors([d.embedding for d in answer.data], expected)
            # --embeddings changes nothing for generation: the same greedy answer as the node without it
            with_embeddings = await client.chat(model="tiny", messages=MESSAGES, options=GREEDY)
            without = await client.chat(model="plain", messages=MESSAGES, options=GREEDY)
            assert with_embeddings.message.content == without.message.content != ""
            # the node without embeddings says which manifest key turns them on
            fix = "set 'embeddings: true' under node plain's llamacpp: in the manifest and run `sollol up`"
            with pytest.raises(ollama.ResponseError) as refused:
                await client.embed(model="plain", input=INPUTS)
            assert refused.value.error.endswith(f"this llama-server serves no embeddings; {fix}")
        # a fresh gateway: until refusals stop counting as failures (issue 17, item 1), one opens the breaker
        async with serving(load_manifest(path).cluster, Settings()) as url:
            oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.APIStatusError) as refused_oai:
                await oai.embeddings.create(model="plain", input=INPUTS)
            assert f"this llama-server serves no embeddings; {fix}" in str(refused_oai.value)
    finally:
        down = await asyncio.to_thread(invoke, "down", str(path), "-q")
        assert down.exit_code == 0, down.stderr


async def test_a_sharded_model_serves_embeddings(
    llama_servers: ServerGroup, tiny_gguf: Path, reference: ServerProcess, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    cluster = Cluster.model_validate(
        {
            "name": "shardemb",
            "backends": [
                {"name": f"rpc{i}", "kind": "rpc", "address": r.host, "port": r.port} for i, r in enumerate(rpcs)
            ],
            "models": [{"name": "tiny", "mode": "shard", "gguf": str(tiny_gguf), "context": 1024, "embeddings": True}],
        }
    )
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    expected = direct_vectors(reference, INPUTS)
    async with serving(cluster, settings) as url:
        client = ollama.AsyncClient(host=url, timeout=300)
        assert_same_vectors((await client.embed(model="tiny", input=INPUTS)).embeddings, expected)
        legacy = await client.embeddings(model="tiny", prompt=INPUTS[0])
        assert_same_vectors([legacy.embedding], expected[:1])
        oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", timeout=300)
        answer = await oai.embeddings.create(model="tiny", input=INPUTS)
        assert_same_vectors([d.embedding for d in answer.data], expected)
