"""What the gateway keeps of finished requests for the dashboard (gateway/feed.py)."""

from __future__ import annotations

from typing import Any

from sollol_cli.events import CoordinatorFailed, CoordinatorStarted
from sollol_cli.gateway.accesslog import Exchange
from sollol_cli.gateway.feed import Feed, with_failures


def exchange(**fields: Any) -> Exchange:
    ex = Exchange("POST", "/api/chat", status=200)
    for name, value in fields.items():
        setattr(ex, name, value)
    return ex


async def test_only_requests_that_name_a_model_are_routing_decisions() -> None:
    feed = Feed(clock=lambda: 100.0)
    before = feed.changed
    feed.add(exchange(path="/api/tags"), 0.01, queue_depth=3)
    assert feed.recent.newest() == [] and not before.is_set()
    feed.add(exchange(model="m", backend="b", attempts=("a (x): refused",), tokens=4), 0.2, queue_depth=0)
    (seen,) = feed.recent.newest()
    assert (seen.request.model, seen.request.backend, seen.request.attempts, seen.request.at) == (
        "m", "b", ("a (x): refused",), 100.0,
    )  # fmt: skip
    assert before.is_set() and not feed.changed.is_set()  # the next change sets a fresh event
    assert feed.traffic.snapshot()["cluster"]["queue_depth"][-1] == 3


async def test_a_sharded_models_last_failure_is_kept_with_the_coordinators_words() -> None:
    feed = Feed(clock=lambda: 50.0)
    started = CoordinatorStarted("big", None, 1, 2.0, ())
    feed.add(exchange(model="big", mode="shard", events=(started,)), 1.0, queue_depth=0)
    assert feed.coordinator_failures == {}
    failed = CoordinatorFailed("big", "ggml_abort: rpc-server 10.0.0.2:50052 went away")
    feed.add(exchange(model="big", mode="shard", events=(failed,)), 1.0, queue_depth=0)
    assert feed.coordinator_failures == {"big": {"at": 50.0, "message": failed.log}}
    feed.add(exchange(model="big", mode="shard", status=502, error="the coordinator exited"), 1.0, queue_depth=0)
    assert feed.coordinator_failures["big"]["message"] == "the coordinator exited"
    feed.add(exchange(model="small", mode="distribute", status=502, error="x"), 1.0, queue_depth=0)
    assert "small" not in feed.coordinator_failures  # not a coordinator's failure
    rows = with_failures([{"name": "big"}, {"name": "small"}], feed.coordinator_failures)
    assert rows == [
        {"name": "big", "last_failure": {"at": 50.0, "message": "the coordinator exited"}},
        {"name": "small", "last_failure": None},
    ]
