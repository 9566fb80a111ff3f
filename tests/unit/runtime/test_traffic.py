"""The dashboard's request ring and traffic buckets (runtime/traffic.py), with a clock moved by hand."""

from __future__ import annotations

from typing import Any

import pytest

from sollol_cli.runtime.traffic import SAMPLES_PER_BUCKET, Finished, RecentRequests, TrafficSeries, percentile


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def done(at: float, **fields: Any) -> Finished:
    base: dict[str, Any] = {"method": "POST", "path": "/api/chat", "status": 200, "duration_s": 0.1}
    return Finished(at=at, **(base | fields))


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.5, 3.0),
        ([3.0], 0.95, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([4.0, 3.0, 2.0, 1.0], 0.95, 4.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 101)], 0.5, 50.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected


def test_the_ring_keeps_the_newest_and_filters() -> None:
    ring = RecentRequests(size=3)
    for i, (model, backend) in enumerate([("a", "n1"), ("b", "n1"), ("a", "n2"), ("a", "n1")]):
        ring.add(done(float(i), model=model, backend=backend))
    assert [s.seq for s in ring.newest()] == [4, 3, 2]  # the first fell out of the ring
    assert [s.seq for s in ring.newest(model="a")] == [4, 3]
    assert [s.seq for s in ring.newest(backend="n1")] == [4, 2]
    assert [s.seq for s in ring.newest(model="a", backend="n2")] == [3]
    assert [s.seq for s in ring.newest(limit=1)] == [4]
    assert [s.seq for s in ring.after(2)] == [3, 4]
    assert ring.after(4) == []


def test_a_seen_request_is_plain_json() -> None:
    ring = RecentRequests()
    seen = ring.add(done(5.0, model="m", backend="b", attempts=("a: refused",), ttft_s=0.01, tokens=7))
    data = seen.as_json()
    assert data["seq"] == 1
    assert data["attempts"] == ["a: refused"]
    assert (data["model"], data["backend"], data["tokens"], data["ttft_s"]) == ("m", "b", 7, 0.01)


# (finished requests as (seconds before now, backend, model, status, tokens, duration_s, ttft_s)), the cluster's
# columns expected in the last two buckets (10 s each, the current one 5 s old)
CASES = [
    pytest.param([], {"requests_per_s": [0, 0], "errors": [0, 0], "latency_p50_ms": [None, None]}, id="idle"),
    pytest.param(
        [(1, "n1", "m", 200, 10, 0.2, 0.05), (2, "n2", "m", 200, 20, 0.4, 0.1)],
        {
            "requests_per_s": [0, 0.4],
            "tokens_per_s": [0, 6.0],
            "latency_p50_ms": [None, 200.0],
            "latency_p95_ms": [None, 400.0],
            "ttft_p50_ms": [None, 50.0],
        },
        id="current-bucket-rate-over-the-part-passed",
    ),  # fmt: skip
    pytest.param(
        [(1, "n1", "m", 200, 100, 1.0, None), (12, "n1", "m", 500, None, 0.1, None)],
        {"requests_per_s": [0.1, 0.2], "tokens_per_s": [0, 20.0], "errors": [1, 0], "ttft_p50_ms": [None, None]},
        id="previous-bucket-and-errors",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("requests", "expected"), CASES)
def test_cluster_columns(requests: list[tuple[Any, ...]], expected: dict[str, list[Any]]) -> None:
    clock = Clock(1005.0)  # 5 s into the bucket that starts at 1000
    series = TrafficSeries(window_s=60, bucket_s=10, clock=clock)
    for ago, backend, model, status, tokens, duration, ttft in requests:
        series.add(
            done(clock.now - ago, backend=backend, model=model, status=status, tokens=tokens, duration_s=duration,
                 ttft_s=ttft)
        )  # fmt: skip
    snap = series.snapshot()
    assert snap["start"] == 950.0 and snap["bucket_s"] == 10
    for column, values in expected.items():
        assert snap["cluster"][column][-2:] == values, column
        assert len(snap["cluster"][column]) == 6


def test_each_backend_and_model_has_its_series() -> None:
    clock = Clock(1000.0)
    series = TrafficSeries(window_s=30, bucket_s=10, clock=clock)
    series.add(done(999.0, backend="n1", model="a", tokens=5))
    series.add(done(999.5, backend="n2", model="a", tokens=5))
    series.add(done(999.5, path="/api/tags"))  # no model, no backend: the cluster's only
    snap = series.snapshot()
    assert sorted(snap["backends"]) == ["n1", "n2"]
    assert sorted(snap["models"]) == ["a"]
    assert snap["cluster"]["requests_per_s"][-2] == 0.3
    assert snap["models"]["a"]["requests_per_s"][-2] == 0.2
    assert snap["backends"]["n1"]["requests_per_s"][-2] == 0.1


def test_old_buckets_leave_the_window() -> None:
    clock = Clock(1000.0)
    series = TrafficSeries(window_s=30, bucket_s=10, clock=clock)
    series.add(done(1000.0, backend="n1", model="a"))
    clock.now = 1025.0
    assert series.snapshot()["backends"]["n1"]["requests_per_s"] == [0.1, 0, 0]
    clock.now = 1030.0
    snap = series.snapshot()
    assert snap["backends"] == {} and snap["models"] == {}
    assert snap["cluster"]["requests_per_s"] == [0, 0, 0]


def test_queue_depth_keeps_the_deepest_of_the_bucket() -> None:
    clock = Clock(1000.0)
    series = TrafficSeries(window_s=20, bucket_s=10, clock=clock)
    for depth, by_model in ((2, {"a": 2}), (5, {"a": 1, "b": 4}), (1, {"b": 1})):
        series.queue_depth(depth, by_model)
    clock.now = 1010.0
    series.queue_depth(0)
    snap = series.snapshot()
    assert snap["cluster"]["queue_depth"] == [5, 0]
    assert (snap["models"]["a"]["queue_depth"], snap["models"]["b"]["queue_depth"]) == ([2, 0], [4, 0])


def test_latency_samples_per_bucket_are_bounded() -> None:
    clock = Clock(1000.0)
    series = TrafficSeries(window_s=10, bucket_s=10, clock=clock)
    for _ in range(SAMPLES_PER_BUCKET * 3):
        series.add(done(1000.0, duration_s=0.5))
    bucket = series._scopes[("cluster", "")][100]
    assert len(bucket.latencies) == SAMPLES_PER_BUCKET
    assert bucket.requests == SAMPLES_PER_BUCKET * 3
