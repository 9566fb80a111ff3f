"""Pure request routing: which backend serves a request, whether it waits, and what happens when one fails.

Nothing here does I/O or reads the clock: the gateway passes in what it measured (backend states, `now`,
elapsed seconds) and acts on the returned values. That keeps every rule a row in a table test.

Order of preference in `choose` (each rule only breaks ties of the ones before it):
  1. usable at all: has the model, healthy, not already tried for this request, a free slot;
  2. higher priority tier (a lower tier is used only while every higher one is full);
  3. model already loaded (warm) before cold, because loading costs seconds to minutes;
  4. lowest load / slots ratio, where load is this process's own in-flight requests plus what other
     clients have on the backend as it last reported (llama-server's /slots; Ollama does not say);
  5. lowest expected latency from the moving speed estimate;
  6. among backends still equal: at random, weighted by free slots (the randomness is passed in).

Only this process's own requests make a backend full (rule 1): other clients' load comes from the last
probe, seconds old, so it orders backends but never makes a request wait for a slot that may be free.

Why random and not the name for the last tie: separate processes (several `sollol run`, several `serve`,
a team sharing a cluster) do not see each other's requests on a backend that does not report its load, so a
stable order sends them all to the same backend. Weighting by free slots rather than power-of-two choices:
the tie is among backends whose load signal is equal, where two random choices compared on it degenerate to
a uniform pick; weights send uncoordinated requests to each backend in proportion to what it can take.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeGuard

from sollol_cli.names import normalize_model_name

# Tokens a typical answer has; only used to weigh time-to-first-token against generation speed.
EXPECTED_TOKENS = 256


@dataclass(frozen=True)
class Candidate:
    """What the gateway knows about one backend right now."""

    name: str
    models: frozenset[str]  # names as the backend reports them; compared with Ollama's rules
    loaded: frozenset[str] = frozenset()  # models in memory (Ollama /api/ps, a running coordinator)
    slots: int = 1
    in_flight: int = 0  # this process's own requests on it: exact, and what makes it full
    # requests other clients have on it, from the backend's own report at the last probe (llama-server's
    # /slots); 0 when it does not report them (Ollama)
    others_in_flight: int = 0
    healthy: bool = True  # probe says up and the circuit breaker lets requests through
    priority: int = 0
    ttft_s: float | None = None  # moving estimate of time to first token
    tokens_per_s: float | None = None  # moving estimate of generation speed

    @property
    def full(self) -> bool:
        return self.in_flight >= self.slots

    @property
    def load(self) -> int:
        """Requests on it from every client, as far as this process knows."""
        return self.in_flight + self.others_in_flight

    def has(self, model_key: str) -> bool:
        return any(normalize_model_name(m) == model_key for m in self.models)

    def is_warm(self, model_key: str) -> bool:
        return any(normalize_model_name(m) == model_key for m in self.loaded)


class Unavailable(StrEnum):
    """Why no backend can take a request at all (the gateway maps each to its own error)."""

    model_unknown = "model_unknown"  # -> errors.ModelNotFound
    none_healthy = "none_healthy"  # -> errors.NoHealthyBackend
    all_tried = "all_tried"  # every healthy backend with the model already failed this request


@dataclass(frozen=True)
class Picked:
    backend: str


@dataclass(frozen=True)
class Wait:
    """Every usable backend is at its slot limit: queue the request (see `queue_decision`)."""

    busy: tuple[str, ...]


@dataclass(frozen=True)
class NoBackend:
    why: Unavailable
    reason: str


Choice = Picked | Wait | NoBackend


def choose(
    model: str,
    candidates: Iterable[Candidate],
    *,
    random: Callable[[], float],
    tried: frozenset[str] = frozenset(),
    expected_tokens: int = EXPECTED_TOKENS,
) -> Choice:
    """Pick the backend for one request for `model`; `tried` holds backends that already failed it.
    `random` returns a float in [0, 1) (`random.Random().random`); it only decides among equal backends."""
    key = normalize_model_name(model)
    with_model = [c for c in candidates if c.has(key)]
    if not with_model:
        return NoBackend(Unavailable.model_unknown, f"model '{model}' is on no node")
    healthy = [c for c in with_model if c.healthy]
    if not healthy:
        names = _names(with_model)
        return NoBackend(Unavailable.none_healthy, f"{names} {_have(with_model)} '{model}' but none is healthy")
    untried = [c for c in healthy if c.name not in tried]
    if not untried:
        return NoBackend(Unavailable.all_tried, f"every healthy backend with '{model}' failed: {_names(healthy)}")
    free = [c for c in untried if not c.full]
    if not free:
        return Wait(tuple(sorted(c.name for c in untried)))
    latency = _latency_estimator(with_model, expected_tokens)

    def rank(c: Candidate) -> tuple[int, bool, float, float]:
        return (-c.priority, not c.is_warm(key), c.load / c.slots, latency(c))

    ranked = [(rank(c), c) for c in free]  # once each: ranking is most of a decision's cost
    best = min(r for r, _ in ranked)
    equal = sorted((c for r, c in ranked if r == best), key=lambda c: c.name)
    return Picked(_weighted_pick(equal, random()).name)


def _weighted_pick(equal: Sequence[Candidate], u: float) -> Candidate:
    """The candidate at point `u` in [0, 1) of the candidates laid end to end, each as long as its free
    slots. Equal candidates have the same load ratio, so free slots are proportional to slots; when other
    clients' load leaves none free, slots are the weights."""
    weights = [max(c.slots - c.load, 0) for c in equal]
    if not any(weights):
        weights = [c.slots for c in equal]
    target = min(max(u, 0.0), 1.0) * sum(weights)
    reached = 0
    for c, weight in zip(equal, weights, strict=True):
        reached += weight
        if target < reached:
            return c
    return next(c for c, weight in zip(reversed(equal), reversed(weights), strict=True) if weight)


def _names(candidates: Sequence[Candidate]) -> str:
    names = sorted(c.name for c in candidates)
    return ("node " if len(names) == 1 else "nodes ") + ", ".join(names)


def _have(candidates: Sequence[Candidate]) -> str:
    return "has" if len(candidates) == 1 else "have"


def _usable(value: float | None) -> TypeGuard[float]:
    """A measurement that can be used: known, finite and positive."""
    return value is not None and math.isfinite(value) and value > 0


def _known(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if _usable(v)]


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _latency_estimator(pool: Sequence[Candidate], expected_tokens: int) -> _Latency:
    # A backend never measured gets the pool's average, so it is neither starved nor flooded.
    ttfts = _known(c.ttft_s for c in pool)
    rates = _known(c.tokens_per_s for c in pool)
    return _Latency(_mean(ttfts, 0.0), _mean(rates, 1.0), expected_tokens)


@dataclass(frozen=True)
class _Latency:
    default_ttft_s: float
    default_tokens_per_s: float
    expected_tokens: int

    def __call__(self, c: Candidate) -> float:
        ttft = c.ttft_s if _usable(c.ttft_s) else self.default_ttft_s
        rate = c.tokens_per_s if _usable(c.tokens_per_s) else self.default_tokens_per_s
        return ttft + self.expected_tokens / rate


@dataclass(frozen=True)
class SpeedEstimate:
    """Exponential moving averages of time to first token and tokens/s for one backend (immutable)."""

    ttft_s: float | None = None
    tokens_per_s: float | None = None

    def updated(self, *, ttft_s: float | None, tokens_per_s: float | None, weight: float = 0.3) -> SpeedEstimate:
        """A new estimate with one request's measurements folded in; missing or bogus samples are skipped
        (a request that produced no tokens says nothing about generation speed)."""
        return SpeedEstimate(_ema(self.ttft_s, ttft_s, weight), _ema(self.tokens_per_s, tokens_per_s, weight))


def _ema(current: float | None, sample: float | None, weight: float) -> float | None:
    if sample is None or not math.isfinite(sample) or sample <= 0:
        return current
    return sample if current is None else current + weight * (sample - current)


class QueueOutcome(StrEnum):
    wait = "wait"
    full = "full"
    expired = "expired"


@dataclass(frozen=True)
class QueueVerdict:
    outcome: QueueOutcome
    remaining_s: float  # how much longer the request may wait (0 unless outcome is `wait`)
    message: str  # for errors.QueueFull when the outcome is not `wait`


def queue_decision(
    model: str, *, queued_ahead: int, max_queue: int, waited_s: float, max_wait_s: float
) -> QueueVerdict:
    """May a request that found every backend busy wait (longer)?

    `queued_ahead` is the number of requests waiting in front of it (the queue length when it arrives),
    `waited_s` how long it has waited so far; limits are the manifest's routing.queue_length / queue_wait.
    """
    if queued_ahead >= max_queue:
        return QueueVerdict(
            QueueOutcome.full,
            0.0,
            f"every backend for '{model}' is busy and {queued_ahead} requests are already waiting; "
            "retry later or raise routing.queue_length",
        )
    if waited_s >= max_wait_s:
        return QueueVerdict(
            QueueOutcome.expired,
            0.0,
            f"no backend for '{model}' had a free slot within {max_wait_s:g} s; "
            "retry later, add slots, or raise routing.queue_wait",
        )
    return QueueVerdict(QueueOutcome.wait, max_wait_s - waited_s, "")


class RetryAction(StrEnum):
    retry_elsewhere = "retry_elsewhere"  # choose again with the failed backend added to `tried`
    end_stream_with_error = "end_stream_with_error"  # status 200 already sent: last NDJSON line {"error": ...}
    give_up = "give_up"  # nothing sent yet: answer with an error status


def retry_plan(failed_attempts: int, max_retries: int, *, first_byte_sent: bool) -> RetryAction:
    """What to do after attempt number `failed_attempts` (1 for the first) failed.

    Once a byte reached the caller the answer cannot be replayed elsewhere without duplicating text, so
    the stream ends with an error line, as Ollama does. Before that, up to `max_retries` other backends are
    tried (when `choose` finds none left untried, the caller gives up as well).
    """
    if first_byte_sent:
        return RetryAction.end_stream_with_error
    if failed_attempts <= max_retries:
        return RetryAction.retry_elsewhere
    return RetryAction.give_up
