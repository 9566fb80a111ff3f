"""`AsyncCluster` against Ollama stand-ins: every answer is checked against the same request sent straight
to the instance that served it (the stand-ins answer deterministically and name themselves), concurrent
requests spread over the backends by slots, failures come out as the documented exceptions."""

from __future__ import annotations

import asyncio

import ollama
import pytest

from sollol_cli.api import (
    AsyncCluster,
    BackendError,
    BackendUnavailable,
    ChatResponse,
    GenerateResponse,
    ModelNotFound,
    NoHealthyBackend,
    StreamBroken,
    UpstreamError,
    UsageError,
)
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinHandle
from tests.unit.api.conftest import cluster_of
from tests.unit.gateway.conftest import MakeStandin

MESSAGES = [{"role": "user", "content": "why is the sea blue?"}]
OPTIONS = {"seed": 3, "num_predict": 6}


def named(standins: list[StandinHandle], backend: str | None) -> StandinHandle:
    return next(s for s in standins if s.name == backend)


async def test_chat_answers_what_the_serving_backend_answers(standin: MakeStandin) -> None:
    a, b = standin("a"), standin("b")
    async with AsyncCluster(cluster_of([a, b]), settings=Settings()) as cluster:
        answer = await cluster.chat("tiny", MESSAGES, options=OPTIONS)
    assert isinstance(answer, ChatResponse)
    assert answer.sollol is not None and answer.sollol.backend in ("a", "b")
    direct = await ollama.AsyncClient(host=named([a, b], answer.sollol.backend).url).chat(
        "tiny", MESSAGES, options=OPTIONS
    )
    assert answer.message.content == direct.message.content
    assert answer["message"]["content"] == direct["message"]["content"]
    assert (answer.done, answer.done_reason, answer.eval_count) == (True, direct.done_reason, direct.eval_count)
    assert answer.message.role == "assistant"


async def test_streamed_chunks_add_up_to_the_answer(standin: MakeStandin) -> None:
    a = standin("a")
    async with AsyncCluster(cluster_of([a])) as cluster:
        whole = await cluster.chat("tiny", MESSAGES, options=OPTIONS)
        chunks = [chunk async for chunk in await cluster.chat("tiny", MESSAGES, options=OPTIONS, stream=True)]
        pieces = [chunk async for chunk in await cluster.generate("tiny", "hello", options=OPTIONS, stream=True)]
        generated = await cluster.generate("tiny", "hello", options=OPTIONS)
    assert len(chunks) > 2
    assert "".join(c.message.content or "" for c in chunks) == whole.message.content
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert [c.sollol is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].sollol is not None and chunks[-1].sollol.backend == "a"
    assert all(isinstance(p, GenerateResponse) for p in pieces)
    assert "".join(p.response or "" for p in pieces) == generated.response
    direct = await ollama.AsyncClient(host=a.url).generate("tiny", "hello", options=OPTIONS)
    assert generated.response == direct.response and generated.context == direct.context


async def test_embed_list_ps_show_status(standin: MakeStandin) -> None:
    a, b = standin("a"), standin("b")
    async with AsyncCluster(cluster_of([a, b])) as cluster:
        embedded = await cluster.embed("tiny", ["one", "two"])
        listed = await cluster.list()
        await cluster.generate("tiny", "load it", options=OPTIONS)
        running = await cluster.ps()
        shown = await cluster.show("tiny")
        status = await cluster.status()
    direct = await ollama.AsyncClient(host=a.url).embed("tiny", ["one", "two"])
    assert embedded.embeddings == direct.embeddings and len(embedded.embeddings) == 2
    assert [m.model for m in listed.models] == ["tiny:latest"]
    assert listed.models[0].details is not None and listed.models[0].details.format == "gguf"
    assert {m.model for m in running.models} == {"tiny:latest"}  # on one backend or both: ties are random
    assert running.models[0].sollol is not None and running.models[0].sollol["backend"] in ("a", "b")
    direct_show = await ollama.AsyncClient(host=a.url).show("tiny")
    assert (shown.template, shown.modelinfo, shown.capabilities) == (
        direct_show.template, direct_show.modelinfo, direct_show.capabilities,
    )  # fmt: skip
    assert shown.details is not None and direct_show.details is not None
    assert shown.details.family == direct_show.details.family
    assert (status.cluster, status.reachable, status.total) == ("test", 2, 2)
    assert sorted(row.name for row in status.backends) == ["a", "b"]
    assert all(row.reachable == "yes" and row.models == ["tiny:latest"] for row in status.backends)
    assert (status.in_flight, status.queue_depth) == (0, 0)


async def test_twenty_concurrent_chats_spread_over_both_backends_by_slots(standin: MakeStandin) -> None:
    a, b = standin("a", num_parallel=2), standin("b", num_parallel=2)
    async with AsyncCluster(cluster_of([a, b], slots=2)) as cluster:
        answers = await asyncio.gather(
            *(cluster.chat("tiny", [{"role": "user", "content": f"question {i}"}], options=OPTIONS) for i in range(20))
        )
    served = [answer.sollol.backend if answer.sollol else None for answer in answers]
    assert set(served) == {"a", "b"}
    for answer in answers:  # each answer is its own backend's
        assert (answer.message.content or "").startswith(f"<{answer.sollol.backend if answer.sollol else ''}>")
    assert a.stats()["max_concurrency"] <= 2 and b.stats()["max_concurrency"] <= 2


async def test_a_backend_that_goes_away_is_routed_around(standin: MakeStandin) -> None:
    a, b = standin("a"), standin("b")
    async with AsyncCluster(cluster_of([a, b])) as cluster:
        a.stop()
        answers = await asyncio.gather(*(cluster.chat("tiny", MESSAGES, options=OPTIONS) for _ in range(6)))
        status = await cluster.status()
    assert {answer.sollol.backend if answer.sollol else None for answer in answers} == {"b"}
    assert {row.name: row.reachable for row in status.backends}["b"] == "yes"


async def test_failures_are_the_documented_exceptions(standin: MakeStandin) -> None:
    a = standin("a")
    async with AsyncCluster(cluster_of([a])) as cluster:
        with pytest.raises(ModelNotFound, match="'nothing-here' not found"):
            await cluster.chat("nothing-here", MESSAGES)
        with pytest.raises(ModelNotFound):
            await cluster.show("nothing-here")
        with pytest.raises(UsageError, match="model name is required"):
            await cluster.generate("", "hi")
        a.set_faults(http_error_next=1, http_error_status=400, message="bad options")
        with pytest.raises(UpstreamError, match="bad options") as refused:
            await cluster.generate("tiny", "hi")
        assert isinstance(refused.value, BackendError) and refused.value.status == 400
        a.clear_faults()
        a.set_faults(error_after_tokens=2)
        chunks = await cluster.chat("tiny", MESSAGES, stream=True)
        with pytest.raises(StreamBroken):
            async for _chunk in chunks:
                pass
        assert isinstance(StreamBroken("x", "y"), BackendError)
        a.clear_faults()
        a.stop()
        with pytest.raises(BackendUnavailable, match="connection refused"):
            await cluster.chat("tiny", MESSAGES)
    async with AsyncCluster(cluster_of([a])) as cluster:  # down from the start: the first probe saw it
        with pytest.raises(NoHealthyBackend, match="no backend answers"):
            await cluster.chat("tiny", MESSAGES)


async def test_opens_on_first_use_and_closes_what_it_started(standin: MakeStandin) -> None:
    a = standin("a")
    cluster = AsyncCluster(cluster_of([a]))
    answer = await cluster.generate("tiny", "hi", options=OPTIONS)  # no `async with`: as with ollama.AsyncClient
    assert answer.done
    runtime = await cluster.runtime()
    assert runtime.shards is None  # no rpc backends: nothing to shard, nothing to stop
    assert any(t.get_name() == "sollol-health" for t in asyncio.all_tasks())
    await cluster.close()
    assert not any(t.get_name() == "sollol-health" for t in asyncio.all_tasks())
    await cluster.close()  # idempotent
    assert (await cluster.generate("tiny", "again", options=OPTIONS)).done  # opens again
    await cluster.close()


@pytest.mark.parametrize("stop_on_close", [False, True])
async def test_stop_on_close_reaches_the_shard_manager(standin: MakeStandin, stop_on_close: bool) -> None:
    """`serve` stops the coordinators it started (True); `run` leaves them warm for their keep-alive."""
    a = standin("a")
    manifest = cluster_of([a], backends=[{"kind": "rpc", "address": "127.0.0.1", "port": 1}])
    async with AsyncCluster(manifest, stop_on_close=stop_on_close) as cluster:
        runtime = await cluster.runtime()
        assert runtime.shards is not None and runtime.shards.stop_on_close is stop_on_close
        assert any(t.get_name() == "sollol-keep-alive" for t in asyncio.all_tasks())
    assert not any(t.get_name().startswith("sollol-") for t in asyncio.all_tasks())


async def test_manifest_discovery_as_the_cli_does(
    standin: MakeStandin, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sollol_cli.api import ManifestNotFound

    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ManifestNotFound):
        AsyncCluster()
    a = standin("a")
    (tmp_path / "cluster.yaml").write_text(  # type: ignore[operator]
        "name: found\nnodes:\n  - name: a\n    address: 127.0.0.1\n    transport: local\n"
        f"    ollama: {{port: {a.port}, models: [tiny]}}\n"
    )
    async with AsyncCluster() as cluster:
        assert cluster.cluster.name == "found"
        assert (await cluster.status()).reachable == 1


async def test_every_keyword_reaches_the_backend_as_ollama_sends_it(standin: MakeStandin) -> None:
    a = standin("a")
    tool = {"type": "function", "function": {"name": "sea", "parameters": {"type": "object", "properties": {}}}}
    async with AsyncCluster(cluster_of([a])) as cluster:
        await cluster.chat(
            "tiny", MESSAGES, tools=[tool], think=False, format="json", options=ollama.Options(seed=5), keep_alive="1m"
        )
        await cluster.generate(
            "tiny", "sea", "end", system="be brief", raw=False, images=[b"\x00\x01"], context=[1, 2], options=OPTIONS
        )
    chat, generate = [body for body in a.stats()["bodies"] if body.get("model") == "tiny"][-2:]
    assert {k: chat[k] for k in ("messages", "tools", "think", "format", "options", "keep_alive")} == {
        "messages": MESSAGES, "tools": [tool], "think": False, "format": "json", "options": {"seed": 5},
        "keep_alive": "1m",
    }  # fmt: skip
    assert {k: generate[k] for k in ("prompt", "suffix", "system", "raw", "images", "context", "options")} == {
        "prompt": "sea", "suffix": "end", "system": "be brief", "raw": False, "images": ["AAE="], "context": [1, 2],
        "options": OPTIONS,
    }  # fmt: skip
