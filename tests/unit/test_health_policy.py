"""Probe schedule and circuit breaker as tables; time and randomness are plain numbers in every row."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sollol_cli.health import (
    Answer,
    BreakerPhase,
    BreakerState,
    CircuitBreaker,
    ProbeSchedule,
    ProbeState,
    judge_answer,
)

SCHEDULE = ProbeSchedule(interval_s=5.0, max_backoff_s=60.0, jitter=0.2, unhealthy_after=2)

# (id, consecutive failures, random, seconds to the next probe)
DELAY_CASES = [
    ("healthy-interval", 0, 0.9, 5.0),
    ("first-failure", 1, 0.0, 5.0),
    ("second-failure-doubles", 2, 0.0, 10.0),
    ("third", 3, 0.0, 20.0),
    ("fourth", 4, 0.0, 40.0),
    ("capped", 5, 0.0, 60.0),
    ("long-outage-capped", 50, 0.0, 60.0),
    ("huge-count-no-overflow", 10_000, 0.0, 60.0),
    ("jitter-shortens", 3, 0.5, 18.0),
    ("jitter-at-cap", 5, 0.5, 54.0),
    ("jitter-near-max", 2, 0.999, 10.0 * (1 - 0.2 * 0.999)),
]  # fmt: skip


@pytest.mark.parametrize(("failures", "random", "delay"), [c[1:] for c in DELAY_CASES], ids=[c[0] for c in DELAY_CASES])
def test_probe_delay(failures: int, random: float, delay: float) -> None:
    assert SCHEDULE.delay_s(failures, random) == pytest.approx(delay)


@given(failures=st.integers(0, 10**6), random=st.floats(0, 1, exclude_max=True))
def test_failing_backend_is_reprobed_within_the_cap(failures: int, random: float) -> None:
    assert 0 < SCHEDULE.delay_s(failures, random) <= SCHEDULE.max_backoff_s


# (id, schedule, state before, probe ok, expected state after a probe at t=100 with random 0)
PROBE_CASES = [
    ("new-backend-up", SCHEDULE, ProbeState(), True, ProbeState(True, 0, 105.0)),
    ("new-backend-down-stays-out", SCHEDULE, ProbeState(), False, ProbeState(False, 1, 105.0)),
    ("one-blip-keeps-healthy", SCHEDULE, ProbeState(True, 0, 100.0), False, ProbeState(True, 1, 105.0)),
    ("second-failure-takes-out", SCHEDULE, ProbeState(True, 1, 100.0), False, ProbeState(False, 2, 110.0)),
    ("down-backs-off", SCHEDULE, ProbeState(False, 4, 100.0), False, ProbeState(False, 5, 160.0)),
    ("comes-back-readmitted", SCHEDULE, ProbeState(False, 9, 100.0), True, ProbeState(True, 0, 105.0)),
    ("recovers-after-blip", SCHEDULE, ProbeState(True, 1, 100.0), True, ProbeState(True, 0, 105.0)),
    ("strict-schedule-first-failure", ProbeSchedule(unhealthy_after=1), ProbeState(True, 0, 100.0), False,
     ProbeState(False, 1, 105.0)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schedule", "before", "ok", "after"), [c[1:] for c in PROBE_CASES], ids=[c[0] for c in PROBE_CASES]
)
def test_after_probe(schedule: ProbeSchedule, before: ProbeState, ok: bool, after: ProbeState) -> None:
    assert schedule.after_probe(before, ok=ok, now=100.0, random=0.0) == after


DUE_CASES = [
    ("new-backend-at-once", ProbeState(), 0.0, True),
    ("early", ProbeState(True, 0, 105.0), 104.9, False),
    ("on-time", ProbeState(True, 0, 105.0), 105.0, True),
    ("late", ProbeState(False, 3, 105.0), 200.0, True),
]  # fmt: skip


@pytest.mark.parametrize(("state", "now", "due"), [c[1:] for c in DUE_CASES], ids=[c[0] for c in DUE_CASES])
def test_probe_due(state: ProbeState, now: float, due: bool) -> None:
    assert SCHEDULE.due(state, now) is due


BREAKER = CircuitBreaker(failure_threshold=3, cooldown_s=30.0)
TRIPPED = [("fail", 0.0), ("fail", 1.0), ("fail", 2.0)]  # opens at t=2

# (id, events as (kind, time), time of the check, expected phase, requests allowed)
BREAKER_CASES: list[tuple[str, list[tuple[str, float]], float, BreakerPhase, bool]] = [
    ("fresh-closed", [], 0.0, BreakerPhase.closed, True),
    ("below-threshold", [("fail", 0.0), ("fail", 1.0)], 2.0, BreakerPhase.closed, True),
    ("opens-at-threshold", TRIPPED, 2.0, BreakerPhase.open, False),
    ("success-resets-count", [("fail", 0.0), ("fail", 1.0), ("ok", 2.0), ("fail", 3.0), ("fail", 4.0)], 5.0,
     BreakerPhase.closed, True),
    ("send-while-closed-changes-nothing", [("send", 0.0), ("fail", 1.0)], 2.0, BreakerPhase.closed, True),
    ("open-until-cooldown", TRIPPED, 31.9, BreakerPhase.open, False),
    ("half-open-after-cooldown", TRIPPED, 32.0, BreakerPhase.half_open, True),
    ("one-trial-at-a-time", [*TRIPPED, ("send", 32.0)], 33.0, BreakerPhase.half_open, False),
    ("trial-success-closes", [*TRIPPED, ("send", 32.0), ("ok", 33.0)], 33.0, BreakerPhase.closed, True),
    ("trial-failure-reopens", [*TRIPPED, ("send", 32.0), ("fail", 33.0)], 34.0, BreakerPhase.open, False),
    ("reopened-cooldown-restarts", [*TRIPPED, ("send", 32.0), ("fail", 33.0)], 63.0, BreakerPhase.half_open, True),
    ("lost-trial-expires", [*TRIPPED, ("send", 32.0)], 62.0, BreakerPhase.half_open, True),
    ("straggler-failure-keeps-cooldown", [*TRIPPED, ("fail", 20.0)], 32.0, BreakerPhase.half_open, True),
    ("straggler-success-closes", [*TRIPPED, ("ok", 10.0)], 10.0, BreakerPhase.closed, True),
    ("send-while-open-is-no-trial", [*TRIPPED, ("send", 10.0)], 32.0, BreakerPhase.half_open, True),
    # a probe finds the backend back after failed probes: the next request is the trial, no cooldown wait
    ("back-half-opens-at-once", [*TRIPPED, ("back", 5.0)], 5.0, BreakerPhase.half_open, True),
    ("back-then-trial-success-closes", [*TRIPPED, ("back", 5.0), ("send", 5.5), ("ok", 6.0)], 6.0,
     BreakerPhase.closed, True),
    ("back-then-trial-failure-reopens", [*TRIPPED, ("back", 5.0), ("send", 5.5), ("fail", 6.0)], 7.0,
     BreakerPhase.open, False),
    ("back-while-closed-changes-nothing", [("fail", 0.0), ("back", 1.0), ("fail", 2.0), ("fail", 3.0)], 3.0,
     BreakerPhase.open, False),
    ("back-during-a-trial-keeps-it", [*TRIPPED, ("send", 32.0), ("back", 33.0)], 33.0, BreakerPhase.half_open,
     False),
]  # fmt: skip


def _replay(events: list[tuple[str, float]]) -> BreakerState:
    state = BreakerState()
    for kind, now in events:
        if kind == "fail":
            state = BREAKER.on_failure(state, now)
        elif kind == "ok":
            state = BREAKER.on_success(state)
        elif kind == "back":
            state = BREAKER.on_back(state, now)
        else:
            assert kind == "send"
            state = BREAKER.on_request(state, now)
    return state


@pytest.mark.parametrize(
    ("events", "at", "phase", "allows"), [c[1:] for c in BREAKER_CASES], ids=[c[0] for c in BREAKER_CASES]
)
def test_circuit_breaker(events: list[tuple[str, float]], at: float, phase: BreakerPhase, allows: bool) -> None:
    state = _replay(events)
    assert (BREAKER.phase(state, at), BREAKER.allows(state, at)) == (phase, allows)


def test_breaker_methods_return_new_states() -> None:
    before = BreakerState()
    after = BREAKER.on_failure(before, 0.0)
    assert before == BreakerState()
    assert after.failures == 1


# (id, status, message, error type, what the answer says about the backend)
ANSWER_CASES = [
    ("bad-request", 400, "invalid JSON body", "", Answer.refused),
    ("ollama-feature-400", 400, '"tiny" does not support tools', "", Answer.refused),
    ("unauthorized", 401, "unauthorized", "authentication_error", Answer.refused),
    ("too-large", 413, "request entity too large", "", Answer.refused),
    ("context-exceeded", 400, "the request exceeds the context size", "exceed_context_size_error", Answer.refused),
    ("model-not-found", 404, "model 'x' not found", "", Answer.elsewhere),
    ("route-missing-ollama", 404, "404 page not found", "", Answer.elsewhere),
    ("route-missing-llama", 404, "File Not Found", "not_found_error", Answer.elsewhere),
    ("method-not-allowed", 405, "405 method not allowed", "", Answer.elsewhere),
    ("no-embeddings", 501, "This server does not support embeddings. Start it with `--embeddings`",
     "not_supported_error", Answer.elsewhere),
    ("not-implemented-bare", 501, "Not Implemented", "", Answer.elsewhere),
    ("thrown-unsupported-500", 500, "image input is not supported - hint: provide the mmproj", "server_error",
     Answer.elsewhere),
    ("ollama-memory", 500, "model requires more system memory (9 GiB) than is available (4 GiB)", "",
     Answer.elsewhere),
    ("loading", 503, "Loading model", "unavailable_error", Answer.busy),
    ("no-slot", 503, "no slot available", "unavailable_error", Answer.busy),
    ("ollama-queue-full", 503, "server busy, please try again.  maximum pending requests exceeded", "", Answer.busy),
    ("rate-limited", 429, "too many requests", "", Answer.busy),
    ("ollama-option-type", 500, 'option "num_predict" must be of type integer', "", Answer.refused),
    ("llama-json-type", 500, "[json.exception.type_error.302] type must be string, but is number", "server_error",
     Answer.refused),
    ("runner-crashed", 500, "llama runner process has terminated: exit status 2", "", Answer.broken),
    ("server-error", 500, "Internal Server Error", "server_error", Answer.broken),
    ("bad-gateway", 502, "Bad Gateway", "", Answer.broken),
    ("gateway-timeout", 504, "Gateway Timeout", "", Answer.broken),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "message", "kind", "answer"), [c[1:] for c in ANSWER_CASES], ids=[c[0] for c in ANSWER_CASES]
)
def test_judge_answer(status: int, message: str, kind: str, answer: Answer) -> None:
    assert judge_answer(status, message, kind) is answer
