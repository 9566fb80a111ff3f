"""Routing rules as tables: each row is one situation and the backend (or outcome) it must lead to."""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sollol_cli.names import normalize_model_name
from sollol_cli.router import (
    Candidate,
    Choice,
    NoBackend,
    Picked,
    QueueOutcome,
    RetryAction,
    SpeedEstimate,
    Unavailable,
    Wait,
    choose,
    queue_decision,
    retry_plan,
)


def cand(name: str, models: tuple[str, ...] = ("tiny",), /, **fields: Any) -> Candidate:
    loaded = frozenset(fields.pop("loaded", ()))
    return Candidate(name=name, models=frozenset(models), loaded=loaded, **fields)


FAST = {"ttft_s": 0.2, "tokens_per_s": 50.0}
SLOW = {"ttft_s": 1.0, "tokens_per_s": 10.0}

# (id, requested model, candidates, tried, expected choice)
CHOOSE_CASES: list[tuple[str, str, list[Candidate], frozenset[str], Choice]] = [
    # model presence and names
    ("no-candidates", "tiny", [], frozenset(), NoBackend(Unavailable.model_unknown, "model 'tiny' is on no node")),
    ("model-on-no-node", "big", [cand("a")], frozenset(),
     NoBackend(Unavailable.model_unknown, "model 'big' is on no node")),
    ("only-the-node-with-the-model", "big", [cand("a"), cand("b", ("big",))], frozenset(), Picked("b")),
    ("latest-tag-implied", "tiny:latest", [cand("a", ("tiny",))], frozenset(), Picked("a")),
    ("case-insensitive", "TINY", [cand("a", ("tiny:latest",))], frozenset(), Picked("a")),
    ("other-tag-is-other-model", "tiny:7b", [cand("a", ("tiny",))], frozenset(),
     NoBackend(Unavailable.model_unknown, "model 'tiny:7b' is on no node")),
    # health
    ("unhealthy-only-one", "tiny", [cand("a", healthy=False)], frozenset(),
     NoBackend(Unavailable.none_healthy, "node a has 'tiny' but none is healthy")),
    ("unhealthy-only-several", "tiny", [cand("b", healthy=False), cand("a", healthy=False), cand("c", ("x",))],
     frozenset(), NoBackend(Unavailable.none_healthy, "nodes a, b have 'tiny' but none is healthy")),
    ("unhealthy-skipped", "tiny", [cand("a", healthy=False, loaded={"tiny"}), cand("b")], frozenset(), Picked("b")),
    # warm before cold, even when the warm one is busier
    ("warm-preferred", "tiny", [cand("a", slots=4), cand("b", slots=4, in_flight=2, loaded={"tiny"})],
     frozenset(), Picked("b")),
    ("warm-matches-by-ollama-rules", "tiny", [cand("a"), cand("b", loaded={"library/tiny:latest"})],
     frozenset(), Picked("b")),
    ("warm-other-model-is-cold", "tiny", [cand("a", ("tiny", "x"), loaded={"x"}), cand("b", loaded={"tiny"})],
     frozenset(), Picked("b")),
    # slot limits
    ("full-warm-skipped", "tiny", [cand("a", in_flight=1, loaded={"tiny"}), cand("b")], frozenset(), Picked("b")),
    ("over-full-skipped", "tiny", [cand("a", slots=2, in_flight=5), cand("b", slots=2, in_flight=1)],
     frozenset(), Picked("b")),
    ("zero-slots-never-picked", "tiny", [cand("a", slots=0)], frozenset(), Wait(("a",))),
    ("all-full-wait", "tiny", [cand("b", in_flight=1), cand("a", slots=2, in_flight=2)], frozenset(),
     Wait(("a", "b"))),
    ("wait-ignores-unhealthy", "tiny", [cand("a", in_flight=1), cand("b", healthy=False)], frozenset(),
     Wait(("a",))),
    # load ratio
    ("lowest-ratio", "tiny", [cand("a", slots=2, in_flight=1), cand("b", slots=4, in_flight=1)],
     frozenset(), Picked("b")),
    ("ratio-not-count", "tiny", [cand("a", slots=2, in_flight=1), cand("b", slots=8, in_flight=5)],
     frozenset(), Picked("a")),
    ("ratio-before-speed", "tiny", [cand("a", slots=2, in_flight=1, **FAST), cand("b", slots=2, **SLOW)],
     frozenset(), Picked("b")),
    # other clients' load, as the backend reported it at the last probe
    ("others-load-counts-in-ratio", "tiny", [cand("a", slots=2, others_in_flight=1), cand("b", slots=2)],
     frozenset(), Picked("b")),
    ("others-plus-own", "tiny",
     [cand("a", slots=4, in_flight=1, others_in_flight=2), cand("b", slots=4, in_flight=2)], frozenset(), Picked("b")),
    ("others-never-make-it-full", "tiny", [cand("a", slots=2, others_in_flight=5)], frozenset(), Picked("a")),
    ("others-full-least-loaded", "tiny",
     [cand("a", slots=2, others_in_flight=4), cand("b", slots=2, others_in_flight=3)], frozenset(), Picked("b")),
    ("warm-before-others-load", "tiny", [cand("a", others_in_flight=1, loaded={"tiny"}), cand("b")],
     frozenset(), Picked("a")),
    # speed
    ("faster-preferred", "tiny", [cand("a", **SLOW), cand("b", **FAST)], frozenset(), Picked("b")),
    ("tokens-per-s-outweighs-ttft", "tiny",
     [cand("a", ttft_s=0.1, tokens_per_s=10.0), cand("b", ttft_s=2.0, tokens_per_s=100.0)],
     frozenset(), Picked("b")),
    ("unknown-speed-beats-slow", "tiny", [cand("a", **SLOW), cand("b", **FAST), cand("c")],
     frozenset({"b"}), Picked("c")),
    ("unknown-speed-loses-to-fast", "tiny", [cand("a", **SLOW), cand("b", **FAST), cand("c")],
     frozenset({"a"}), Picked("b")),
    ("partly-known-speed", "tiny",
     [cand("a", ttft_s=1.0, tokens_per_s=20.0), cand("b", ttft_s=0.1, tokens_per_s=20.0), cand("c", ttft_s=0.5)],
     frozenset({"b"}), Picked("c")),
    ("zero-rate-is-unknown", "tiny",
     [cand("a", tokens_per_s=0.0), cand("b", tokens_per_s=5.0), cand("c", tokens_per_s=20.0)],
     frozenset({"c"}), Picked("a")),
    # priority tiers
    ("higher-tier-first", "tiny", [cand("a", loaded={"tiny"}, **FAST), cand("b", priority=1, **SLOW)],
     frozenset(), Picked("b")),
    ("higher-tier-despite-load", "tiny", [cand("a"), cand("b", priority=1, slots=4, in_flight=3)],
     frozenset(), Picked("b")),
    ("spill-to-lower-tier", "tiny", [cand("a"), cand("b", priority=1, in_flight=1)], frozenset(), Picked("a")),
    ("spill-to-next-tier-not-lowest", "tiny",
     [cand("low", priority=-1), cand("mid"), cand("top", priority=2, in_flight=1)], frozenset(), Picked("mid")),
    ("every-tier-full", "tiny", [cand("a", in_flight=1), cand("b", priority=1, in_flight=1)], frozenset(),
     Wait(("a", "b"))),
    # retries
    ("tried-skipped", "tiny", [cand("a", loaded={"tiny"}), cand("b")], frozenset({"a"}), Picked("b")),
    ("all-tried", "tiny", [cand("a"), cand("b"), cand("c", healthy=False)], frozenset({"a", "b"}),
     NoBackend(Unavailable.all_tried, "every healthy backend with 'tiny' failed: nodes a, b")),
    ("untried-are-full-wait", "tiny", [cand("a"), cand("b", in_flight=1)], frozenset({"a"}), Wait(("b",))),
    ("tried-unrelated-name", "tiny", [cand("a")], frozenset({"zzz"}), Picked("a")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "candidates", "tried", "expected"),
    [c[1:] for c in CHOOSE_CASES],
    ids=[c[0] for c in CHOOSE_CASES],
)
def test_choose(model: str, candidates: list[Candidate], tried: frozenset[str], expected: Choice) -> None:
    # No row is a tie: whatever the random source says, the answer is the same.
    for draw in (0.0, 0.5, 0.999999):
        assert choose(model, candidates, random=functools.partial(float, draw), tried=tried) == expected


def test_expected_tokens_trades_first_token_against_rate() -> None:
    quick_start = cand("a", ttft_s=0.1, tokens_per_s=10.0)
    fast_rate = cand("b", ttft_s=2.0, tokens_per_s=100.0)
    draw = random.Random(1).random
    assert choose("tiny", [quick_start, fast_rate], random=draw, expected_tokens=1) == Picked("a")
    assert choose("tiny", [quick_start, fast_rate], random=draw, expected_tokens=1000) == Picked("b")


# Ties: equally good backends are chosen at random, weighted by free slots.
# (id, candidates, tried, share of the picks each backend gets)
TIE_CASES: list[tuple[str, list[Candidate], frozenset[str], dict[str, float]]] = [
    ("equal-backends-equal-shares", [cand("b"), cand("c"), cand("a")], frozenset(), {"a": 1/3, "b": 1/3, "c": 1/3}),
    ("shares-follow-slots", [cand("a", slots=1), cand("b", slots=3)], frozenset(), {"a": 0.25, "b": 0.75}),
    ("shares-follow-free-slots", [cand("a", slots=4, in_flight=2), cand("b", slots=2, in_flight=1)], frozenset(),
     {"a": 2/3, "b": 1/3}),
    ("others-load-counts-as-taken", [cand("a", slots=4, others_in_flight=2), cand("b", slots=2, in_flight=1)],
     frozenset(), {"a": 2/3, "b": 1/3}),
    ("over-subscribed-by-others-by-slots", [cand("a", slots=1, others_in_flight=2), cand("b", slots=2,
     others_in_flight=4)], frozenset(), {"a": 1/3, "b": 2/3}),
    ("only-among-the-best", [cand("a", **SLOW), cand("b"), cand("c", priority=1), cand("d", priority=1)],
     frozenset(), {"c": 0.5, "d": 0.5}),
    ("warm-ones-only", [cand("a"), cand("b", loaded={"tiny"}), cand("c", loaded={"tiny"}, slots=2)],
     frozenset(), {"b": 1/3, "c": 2/3}),
    ("tried-left-out", [cand("a"), cand("b"), cand("c")], frozenset({"b"}), {"a": 0.5, "c": 0.5}),
    ("same-measured-speed", [cand("a", **FAST), cand("b", **FAST), cand("c", **SLOW)], frozenset(),
     {"a": 0.5, "b": 0.5}),
]  # fmt: skip


@pytest.mark.parametrize(("candidates", "tried", "shares"), [c[1:] for c in TIE_CASES], ids=[c[0] for c in TIE_CASES])
def test_ties_are_split_by_free_slots(
    candidates: list[Candidate], tried: frozenset[str], shares: dict[str, float]
) -> None:
    """Exact: draws spread evenly over [0, 1) land on each backend in proportion to its weight."""
    steps = 1200
    picks = Counter(
        _picked(choose("tiny", candidates, random=functools.partial(float, i / steps), tried=tried))
        for i in range(steps)
    )
    assert {name: count / steps for name, count in picks.items()} == pytest.approx(shares)


@pytest.mark.parametrize(("candidates", "tried", "shares"), [c[1:] for c in TIE_CASES], ids=[c[0] for c in TIE_CASES])
def test_ties_with_a_seeded_random(
    candidates: list[Candidate], tried: frozenset[str], shares: dict[str, float]
) -> None:
    """What the dispatcher does (a `random.Random`): every equal backend is picked, in about its share."""
    draws = 3000
    rng = random.Random(16)
    picks = Counter(_picked(choose("tiny", candidates, random=rng.random, tried=tried)) for _ in range(draws))
    assert set(picks) == set(shares)
    for name, share in shares.items():
        assert picks[name] / draws == pytest.approx(share, abs=0.04)


def test_tie_draws_at_the_edges() -> None:
    """A draw of 0 takes the first equal backend by name, a draw at (or past) 1 the last one."""
    equal = [cand("c"), cand("a"), cand("b")]
    assert choose("tiny", equal, random=lambda: 0.0) == Picked("a")
    assert choose("tiny", equal, random=lambda: 0.9999999) == Picked("c")
    assert choose("tiny", equal, random=lambda: 1.0) == Picked("c")


def _picked(choice: Choice) -> str:
    assert isinstance(choice, Picked)
    return choice.backend


# Unique names; the model set, health, load and speed vary freely.
_candidates = st.lists(
    st.builds(
        Candidate,
        name=st.sampled_from(["a", "b", "c", "d", "e"]),
        models=st.frozensets(st.sampled_from(["tiny", "TINY:latest", "big", "x:7b"]), max_size=3),
        loaded=st.frozensets(st.sampled_from(["tiny", "big"]), max_size=2),
        slots=st.integers(0, 4),
        in_flight=st.integers(0, 5),
        others_in_flight=st.integers(0, 5),
        healthy=st.booleans(),
        priority=st.integers(-1, 2),
        ttft_s=st.none() | st.floats(0, 10),
        tokens_per_s=st.none() | st.floats(0, 200),
    ),
    max_size=5,
    unique_by=lambda c: c.name,
)


@given(
    model=st.sampled_from(["tiny", "big", "x:7b", "none"]),
    candidates=_candidates,
    tried=st.frozensets(st.sampled_from(["a", "b", "c", "d", "e"])),
    draw=st.floats(0, 1),
)
def test_choose_never_picks_an_unusable_backend(
    model: str, candidates: list[Candidate], tried: frozenset[str], draw: float
) -> None:
    key = normalize_model_name(model)
    usable = [c for c in candidates if c.has(key) and c.healthy and c.name not in tried]
    result = choose(model, candidates, random=lambda: draw, tried=tried)
    if isinstance(result, Picked):
        picked = next(c for c in candidates if c.name == result.backend)
        assert picked in usable
        assert picked.in_flight < picked.slots
    elif isinstance(result, Wait):
        assert usable
        assert all(c.full for c in usable)
    else:
        assert not [c for c in usable if not c.full]


SPEED_CASES = [
    ("first-sample-taken-as-is", SpeedEstimate(), (0.5, 20.0), SpeedEstimate(0.5, 20.0)),
    ("moving-average", SpeedEstimate(1.0, 10.0), (2.0, 20.0), SpeedEstimate(1.3, 13.0)),
    ("no-tokens-keeps-rate", SpeedEstimate(1.0, 10.0), (2.0, None), SpeedEstimate(1.3, 10.0)),
    ("zero-rate-ignored", SpeedEstimate(1.0, 10.0), (None, 0.0), SpeedEstimate(1.0, 10.0)),
    ("nan-ignored", SpeedEstimate(1.0, 10.0), (math.nan, math.inf), SpeedEstimate(1.0, 10.0)),
    ("negative-ignored", SpeedEstimate(None, None), (-1.0, -5.0), SpeedEstimate(None, None)),
]


@pytest.mark.parametrize(("before", "sample", "after"), [c[1:] for c in SPEED_CASES], ids=[c[0] for c in SPEED_CASES])
def test_speed_estimate(before: SpeedEstimate, sample: tuple[float | None, float | None], after: SpeedEstimate) -> None:
    updated = before.updated(ttft_s=sample[0], tokens_per_s=sample[1], weight=0.3)
    rounded = SpeedEstimate(*(None if v is None else round(v, 9) for v in (updated.ttft_s, updated.tokens_per_s)))
    assert rounded == after


# (id, queued_ahead, max_queue, waited_s, max_wait_s, outcome, remaining_s, message)
FULL = (
    "every backend for 'tiny' is busy and {n} requests are already waiting; retry later or raise routing.queue_length"
)
EXPIRED = "no backend for 'tiny' had a free slot within {s} s; retry later, add slots, or raise routing.queue_wait"
QUEUE_CASES = [
    ("room-in-queue", 3, 64, 0.0, 30.0, QueueOutcome.wait, 30.0, ""),
    ("still-time-left", 0, 64, 12.5, 30.0, QueueOutcome.wait, 17.5, ""),
    ("queue-full", 64, 64, 0.0, 30.0, QueueOutcome.full, 0.0, FULL.format(n=64)),
    ("full-beats-expired", 70, 64, 31.0, 30.0, QueueOutcome.full, 0.0, FULL.format(n=70)),
    ("no-queue-configured", 0, 0, 0.0, 30.0, QueueOutcome.full, 0.0, FULL.format(n=0)),
    ("wait-expired", 5, 64, 30.0, 30.0, QueueOutcome.expired, 0.0, EXPIRED.format(s=30)),
    ("fractional-limit", 5, 64, 2.6, 2.5, QueueOutcome.expired, 0.0, EXPIRED.format(s=2.5)),
    ("zero-wait-configured", 0, 64, 0.0, 0.0, QueueOutcome.expired, 0.0, EXPIRED.format(s=0)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ahead", "max_queue", "waited", "max_wait", "outcome", "remaining", "message"),
    [c[1:] for c in QUEUE_CASES],
    ids=[c[0] for c in QUEUE_CASES],
)
def test_queue_decision(
    ahead: int, max_queue: int, waited: float, max_wait: float, outcome: QueueOutcome, remaining: float, message: str
) -> None:
    verdict = queue_decision("tiny", queued_ahead=ahead, max_queue=max_queue, waited_s=waited, max_wait_s=max_wait)
    assert (verdict.outcome, verdict.message) == (outcome, message)
    assert verdict.remaining_s == pytest.approx(remaining)


RETRY_CASES = [
    ("first-failure-retries", 1, 2, False, RetryAction.retry_elsewhere),
    ("last-retry", 2, 2, False, RetryAction.retry_elsewhere),
    ("retries-used-up", 3, 2, False, RetryAction.give_up),
    ("no-retries-configured", 1, 0, False, RetryAction.give_up),
    ("after-first-byte", 1, 2, True, RetryAction.end_stream_with_error),
    ("after-first-byte-retries-used-up", 5, 2, True, RetryAction.end_stream_with_error),
]  # fmt: skip


@pytest.mark.parametrize(
    ("failed", "max_retries", "first_byte", "action"), [c[1:] for c in RETRY_CASES], ids=[c[0] for c in RETRY_CASES]
)
def test_retry_plan(failed: int, max_retries: int, first_byte: bool, action: RetryAction) -> None:
    assert retry_plan(failed, max_retries, first_byte_sent=first_byte) is action
