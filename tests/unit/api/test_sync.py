"""`SyncCluster` against Ollama stand-ins: the same answers as `AsyncCluster`, from plain code and from many
threads at once, streams as iterators, and a closed cluster refuses politely."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import ollama
import pytest

from sollol_cli.api import ChatResponse, ModelNotFound, SyncCluster, UsageError
from tests.unit.api.conftest import cluster_of
from tests.unit.gateway.conftest import MakeStandin

MESSAGES = [{"role": "user", "content": "why is the sea blue?"}]
OPTIONS = {"seed": 3, "num_predict": 6}


def test_chat_generate_embed_and_streams(standin: MakeStandin) -> None:
    a = standin("a")
    direct = ollama.Client(host=a.url)
    with SyncCluster(cluster_of([a])) as cluster:
        answer = cluster.chat("tiny", MESSAGES, options=OPTIONS)
        chunks = list(cluster.chat("tiny", MESSAGES, options=OPTIONS, stream=True))
        pieces = list(cluster.generate("tiny", "hello", options=OPTIONS, stream=True))
        embedded = cluster.embed("tiny", "one")
        assert [m.model for m in cluster.list().models] == ["tiny:latest"]
        assert cluster.status().reachable == 1
    assert isinstance(answer, ChatResponse)
    assert answer.message.content == direct.chat("tiny", MESSAGES, options=OPTIONS).message.content
    assert "".join(c.message.content or "" for c in chunks) == answer.message.content
    assert "".join(p.response or "" for p in pieces) == direct.generate("tiny", "hello", options=OPTIONS).response
    assert embedded.embeddings == direct.embed("tiny", "one").embeddings


def test_leaving_a_stream_early_ends_the_request(standin: MakeStandin) -> None:
    a = standin("a", response_tokens=200)
    with SyncCluster(cluster_of([a])) as cluster:
        for chunk in cluster.generate("tiny", "a long one", stream=True):
            assert chunk.response
            break
        a.wait_until(lambda stats: stats["active"] == 0)
        assert cluster.generate("tiny", "next", options=OPTIONS).done  # the slot is free again


def test_many_threads_share_one_cluster(standin: MakeStandin) -> None:
    a, b = standin("a", num_parallel=2), standin("b", num_parallel=2)
    with SyncCluster(cluster_of([a, b], slots=2)) as cluster, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: cluster.chat("tiny", [{"role": "user", "content": f"q{i}"}], options=OPTIONS), range(16))
        )
    assert all(answer.done for answer in answers)
    assert {answer.sollol.backend for answer in answers if answer.sollol} <= {"a", "b"}
    assert len(answers) == 16


def test_errors_and_a_closed_cluster(standin: MakeStandin) -> None:
    a = standin("a")
    cluster = SyncCluster(cluster_of([a]))
    with pytest.raises(ModelNotFound):
        cluster.generate("missing", "hi")
    thread = cluster._thread
    cluster.close()
    cluster.close()
    assert not thread.is_alive()
    assert not any(t.name == "sollol-api" for t in threading.enumerate())
    with pytest.raises(UsageError, match="closed"):
        cluster.generate("tiny", "hi")
