"""`sollol serve` in front of a real llama-server node and a real sharded model: the OpenAI Responses API
and the Anthropic Messages API (streaming and not) through the official `openai` and `anthropic` clients,
answering exactly as llama-server does directly (greedy decoding); and a llama-server that refuses a
feature (no `--embeddings`) stays in service (issue 17)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import ollama
import openai
import pytest

from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from tests.harness._gateway import serving
from tests.harness.llama import ServerGroup

pytestmark = pytest.mark.real

QUESTION = "Tell me about the sea."
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]
TOKENS = 12


def api_calls(url: str, model: str) -> dict[str, Any]:
    """The same greedy requests through both APIs, streamed and not."""
    gpt = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=300)
    settings: dict[str, Any] = {"temperature": 0, "max_output_tokens": TOKENS}
    out: dict[str, Any] = {"response": gpt.responses.create(model=model, input=QUESTION, **settings)}
    out["response_events"] = list(gpt.responses.create(model=model, input=QUESTION, stream=True, **settings))
    claude = anthropic.Anthropic(base_url=url, api_key="unused", timeout=300)
    # this anthropic client has no temperature argument any more: the fields go in the body as they are
    greedy: dict[str, Any] = {"max_tokens": TOKENS, "extra_body": {"temperature": 0, "top_k": 1}}
    out["message"] = claude.messages.create(model=model, messages=MESSAGES, **greedy)
    with claude.messages.stream(model=model, messages=MESSAGES, **greedy) as stream:
        out["message_pieces"] = list(stream.text_stream)
        out["message_final"] = stream.get_final_message()
    return out


def check_same_answers(through: dict[str, Any], direct: dict[str, Any]) -> None:
    text = through["response"].output_text
    assert text and text == direct["response"].output_text
    assert through["response"].usage.output_tokens == direct["response"].usage.output_tokens
    events = through["response_events"]
    assert [e.type for e in events] == [e.type for e in direct["response_events"]]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    assert events[-1].type == "response.completed" and events[-1].response.output_text == text
    message = through["message"].content[0].text
    assert message and message == direct["message"].content[0].text
    assert through["message"].stop_reason == direct["message"].stop_reason
    assert len(through["message_pieces"]) > 1  # streamed piece by piece, not in one lump
    assert "".join(through["message_pieces"]) == through["message_final"].content[0].text == message
    assert through["message_final"].usage.output_tokens == direct["message_final"].usage.output_tokens


async def test_responses_and_messages_on_a_llama_server_node_and_refusals_keep_it_serving(
    llama_servers: ServerGroup, tiny_gguf: Path
) -> None:
    node = llama_servers.llama_server(Path(tiny_gguf), context=1024)  # no --embeddings: it refuses them
    cluster = Cluster.model_validate(
        {
            "name": "apis",
            "nodes": [{"name": "n1", "address": "127.0.0.1", "transport": "local",
                       "llamacpp": {"port": node.port, "model": str(tiny_gguf)}}],
        }
    )  # fmt: skip
    model = Path(tiny_gguf).stem
    async with serving(cluster, Settings()) as url, aiohttp.ClientSession() as session:
        for _ in range(3):  # issue 17: three refused embeddings used to take the node out
            async with session.post(url + "/api/embed", json={"model": model, "input": "the sea"}) as resp:
                assert resp.status == 501
                # the node's refusal, turned into what to change in the manifest
                assert "this llama-server serves no embeddings; set 'embeddings: true'" in (await resp.json())["error"]
        async with session.post(url + "/v1/embeddings", json={"model": model, "input": "the sea"}) as resp:
            assert resp.status == 501
        chat = await ollama.AsyncClient(host=url).chat(
            model=model, messages=MESSAGES, options={"temperature": 0, "top_k": 1, "num_predict": TOKENS}
        )
        assert chat.message.content and chat.done_reason == "length"
        through = await asyncio.to_thread(api_calls, url, model)
    direct = await asyncio.to_thread(api_calls, node.url, model)
    check_same_answers(through, direct)


@pytest.mark.slow
async def test_responses_and_messages_on_a_sharded_model(
    llama_servers: ServerGroup, tiny_gguf: Path, tmp_path: Path
) -> None:
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    single = llama_servers.llama_server(Path(tiny_gguf), context=1024)
    cluster = Cluster.model_validate(
        {
            "name": "shardapis",
            "backends": [
                {"name": f"rpc{i}", "kind": "rpc", "address": r.host, "port": r.port} for i, r in enumerate(rpcs)
            ],
            "models": [{"name": "tiny", "mode": "shard", "gguf": str(tiny_gguf), "context": 1024}],
        }
    )
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    async with serving(cluster, settings) as url:
        through = await asyncio.to_thread(api_calls, url, "tiny")
    direct = await asyncio.to_thread(api_calls, single.url, "tiny")
    check_same_answers(through, direct)
