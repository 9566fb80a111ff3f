"""What the dashboard shows of the requests (pure: no I/O, the caller passes the time): the last routing
decisions in a bounded ring, and per-backend and per-model counters in fixed time buckets over a window.

The gateway feeds both from one place, where it finishes a request (`gateway.app`); `sollol dashboard`
without a gateway has none.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# Latency samples kept per bucket for its percentiles; beyond it, new samples overwrite old ones in turn.
SAMPLES_PER_BUCKET = 512


@dataclass(frozen=True, slots=True)
class Finished:
    """One request as the gateway finished it: where it went, why, and how fast."""

    at: float  # epoch seconds when it ended
    method: str
    path: str
    status: int
    duration_s: float
    model: str | None = None
    backend: str | None = None
    mode: str | None = None  # distribute or shard
    reason: str | None = None  # why that mode (the router's words)
    attempts: tuple[str, ...] = ()  # failed attempts elsewhere before it was served, each naming its backend
    queued_s: float = 0.0
    ttft_s: float | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status >= 500 or self.error is not None


_FINISHED_FIELDS = tuple(f.name for f in fields(Finished))


@dataclass(frozen=True, slots=True)
class Seen:
    """A finished request with its place in the ring (`seq` grows by one per request, from 1)."""

    seq: int
    request: Finished

    def as_json(self) -> dict[str, Any]:
        request = self.request
        data = {"seq": self.seq} | {name: getattr(request, name) for name in _FINISHED_FIELDS}
        data["attempts"] = list(request.attempts)
        return data


class RecentRequests:
    """The last `size` finished requests."""

    def __init__(self, size: int = 200) -> None:
        self._ring: deque[Seen] = deque(maxlen=size)
        self.last_seq = 0

    def add(self, request: Finished) -> Seen:
        self.last_seq += 1
        seen = Seen(self.last_seq, request)
        self._ring.append(seen)
        return seen

    def after(self, seq: int) -> list[Seen]:
        """Those added after `seq`, oldest first (what a stream has not sent yet)."""
        return [seen for seen in self._ring if seen.seq > seq]

    def newest(self, *, model: str | None = None, backend: str | None = None, limit: int | None = None) -> list[Seen]:
        out = [
            seen
            for seen in reversed(self._ring)
            if (model is None or seen.request.model == model) and (backend is None or seen.request.backend == backend)
        ]
        return out if limit is None else out[:limit]


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    # the deepest seen in the bucket: the cluster's and each model's (a waiting request has no backend yet:
    # it takes whichever frees a slot first, so there is no queue per backend)
    queue_depth: int = 0

    def add(self, request: Finished) -> None:
        self.requests += 1
        self.errors += request.failed
        self.tokens += request.tokens or 0
        _sample(self.latencies, request.duration_s, self.requests)
        if request.ttft_s is not None:
            _sample(self.ttfts, request.ttft_s, self.requests)


def _sample(samples: list[float], value: float, count: int) -> None:
    if len(samples) < SAMPLES_PER_BUCKET:
        samples.append(value)
    else:
        samples[count % SAMPLES_PER_BUCKET] = value


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Nearest-rank percentile (`fraction` in (0, 1]); None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


COLUMNS = (
    "requests_per_s", "tokens_per_s", "errors", "queue_depth",
    "ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms",
)  # fmt: skip
Scope = tuple[str, str]  # ("cluster", ""), ("backend", name) or ("model", name)
CLUSTER: Scope = ("cluster", "")


class TrafficSeries:
    """Counters per `bucket_s` seconds over the last `window_s`, for the whole cluster, each backend and each
    model. `clock` gives epoch seconds (injected: tests move time by hand)."""

    def __init__(self, *, window_s: float = 900.0, bucket_s: float = 10.0, clock: Callable[[], float]) -> None:
        self.bucket_s = bucket_s
        self.buckets = max(1, math.ceil(window_s / bucket_s))
        self.clock = clock
        self._scopes: dict[Scope, dict[int, _Bucket]] = {}
        self._pruned_for = -1  # the current bucket when old ones were last dropped (once per bucket)

    def _index(self, at: float) -> int:
        return math.floor(at / self.bucket_s)

    def _bucket(self, scope: Scope, index: int) -> _Bucket:
        return self._scopes.setdefault(scope, {}).setdefault(index, _Bucket())

    def add(self, request: Finished) -> None:
        index = self._index(request.at)
        scopes = [CLUSTER]
        if request.backend:
            scopes.append(("backend", request.backend))
        if request.model:
            scopes.append(("model", request.model))
        for scope in scopes:
            self._bucket(scope, index).add(request)
        self._prune()

    def queue_depth(self, depth: int, by_model: Mapping[str, int] | None = None) -> None:
        """The number of requests waiting now, in all and per model (kept as the bucket's maximum)."""
        index = self._index(self.clock())
        for scope, waiting in [(CLUSTER, depth), *((("model", m), n) for m, n in (by_model or {}).items())]:
            bucket = self._bucket(scope, index)
            bucket.queue_depth = max(bucket.queue_depth, waiting)

    def _prune(self) -> None:
        current = self._index(self.clock())
        if current == self._pruned_for:
            return
        self._pruned_for = current
        oldest = current - self.buckets + 1
        for scope in list(self._scopes):
            buckets = self._scopes[scope]
            for index in [i for i in buckets if i < oldest]:
                del buckets[index]
            if not buckets:
                del self._scopes[scope]

    def snapshot(self) -> dict[str, Any]:
        """Each scope's columns, oldest bucket first; rates per second over the bucket (over the part of it
        that has passed, for the current one)."""
        self._prune()
        now = self.clock()
        last = self._index(now)
        first = last - self.buckets + 1
        out: dict[str, Any] = {
            "bucket_s": self.bucket_s,
            "start": first * self.bucket_s,
            "now": now,
            "cluster": None,
            "backends": {},
            "models": {},
        }
        for (kind, name), buckets in sorted(self._scopes.items()):
            columns = self._columns(buckets, first, last, now)
            if kind == "cluster":
                out["cluster"] = columns
            else:
                out[kind + "s"][name] = columns
        if out["cluster"] is None:
            out["cluster"] = self._columns({}, first, last, now)
        return out

    def _columns(self, buckets: dict[int, _Bucket], first: int, last: int, now: float) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for index in range(first, last + 1):
            bucket = buckets.get(index, _Bucket())
            span = self.bucket_s if index < last else max(1.0, min(self.bucket_s, now - index * self.bucket_s))
            columns["requests_per_s"].append(round(bucket.requests / span, 3))
            columns["tokens_per_s"].append(round(bucket.tokens / span, 3))
            columns["errors"].append(bucket.errors)
            columns["queue_depth"].append(bucket.queue_depth)
            for name, samples in (("ttft", bucket.ttfts), ("latency", bucket.latencies)):
                for label, fraction in (("p50", 0.5), ("p95", 0.95)):
                    value = percentile(samples, fraction)
                    columns[f"{name}_{label}_ms"].append(None if value is None else round(value * 1000, 3))
        return columns
